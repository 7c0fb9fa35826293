"""`config check` and `run` refuse, with exit 78, every problem that depends only on the config
file and the files it names; each message names the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import EX_CONFIG, main
from tests.doctor.lanes import write_lane
from tests.support.pki import TestPki

BASE = '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'


def check(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    return result.exit_code, result.output.splitlines()


def test_a_directory_as_the_config_exits_78_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "lane.d"
    folder.mkdir()
    code, lines = check(folder)
    assert code == EX_CONFIG
    assert lines[0] == f"error: {folder}: (file): cannot read: Is a directory"
    assert lines[-1] == "1 problem(s); nothing was started."


def test_a_binary_config_exits_78_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "lane.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0].startswith(f"error: {path}: (file): cannot read: 'utf-8' codec can't decode")


def test_an_unreadable_config_exits_78_unless_root_can_read_it(tmp_path: Path) -> None:
    """chmod 000 stops everyone but root; root reads it, and then the file's content decides."""
    path = write_lane(tmp_path, BASE)
    path.chmod(0o000)
    code, lines = check(path)
    if os.geteuid() == 0:
        assert code == 0, lines
        assert lines[0].startswith(f"{path}: ok: lane SYS/L1")
    else:
        assert code == EX_CONFIG
        assert lines[0] == f"error: {path}: (file): cannot read: Permission denied"


HOST_MEANING = "must be a host name or an IP address, without a scheme, port or spaces"


@pytest.mark.parametrize(
    "host",
    ["tcp://broker.example:1883", "mqtt://broker.example", "broker.example:1883", "my broker"],
)
def test_a_broker_host_that_is_not_a_host_exits_78(tmp_path: Path, host: str) -> None:
    path = write_lane(tmp_path, BASE + f'[mqtt]\nhost = "{host}"\n')
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0] == f'error: {path}:9: mqtt.host = "{host}": {HOST_MEANING}'


@pytest.mark.parametrize("host", ["broker.example", "10.1.2.3", "::1", "[fd00::1]", "localhost"])
def test_host_names_and_addresses_pass(tmp_path: Path, host: str) -> None:
    code, lines = check(write_lane(tmp_path, BASE + f'[mqtt]\nhost = "{host}"\n'))
    assert code == 0, lines


@pytest.mark.parametrize("section", ["cache", "outbox"])
def test_an_empty_database_path_exits_78(tmp_path: Path, section: str) -> None:
    file = "credentials.db" if section == "cache" else "outbox.db"
    path = write_lane(tmp_path, BASE.replace(f'path = "{file}"', 'path = ""'))
    code, lines = check(path)
    assert code == EX_CONFIG
    line = 5 if section == "cache" else 7
    assert lines[0].startswith(f'error: {path}:{line}: {section}.path = "": must name a file')


def test_a_cache_path_that_is_a_directory_exits_78(tmp_path: Path) -> None:
    (tmp_path / "credentials.db").mkdir()
    path = write_lane(tmp_path, BASE)
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0] == (
        f'error: {path}:5: cache.path = "{tmp_path / "credentials.db"}": is a directory; name '
        f"the SQLite file inside it (e.g. {tmp_path / 'credentials.db' / 'credentials.db'})"
    )


def test_an_outbox_in_a_missing_folder_exits_78(tmp_path: Path) -> None:
    path = write_lane(tmp_path, BASE.replace('"outbox.db"', '"state/outbox.db"'))
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0].startswith(
        f'error: {path}:7: outbox.path = "{tmp_path / "state" / "outbox.db"}": its folder '
        f"{tmp_path / 'state'} does not exist; create it"
    )


def test_missing_trust_tls_and_models_files_are_each_named(tmp_path: Path) -> None:
    body = BASE.replace(
        '[cache]\npath = "credentials.db"\n',
        '[cache]\npath = "credentials.db"\ntrust_file = "trust.json"\n',
    ) + (
        '[mqtt]\ntls = true\nca_file = "ca.pem"\ncert_file = "lane.pem"\nkey_file = "lane.key"\n'
        'updates_cert_file = "cache.pem"\nupdates_key_file = "cache.key"\n'
        '[vision]\nmodels_dir = "models"\n'
    )
    path = write_lane(tmp_path, body)
    code, lines = check(path)
    assert code == EX_CONFIG
    errors = [line for line in lines if line.startswith("error: ")]
    keys = [line.split(": ")[2].split(" = ")[0] for line in errors]
    assert keys == [
        "cache.trust_file",
        "mqtt.ca_file",
        "mqtt.cert_file",
        "mqtt.key_file",
        "mqtt.updates_cert_file",
        "mqtt.updates_key_file",
        "vision.models_dir",
    ]
    assert errors[0] == (
        f'error: {path}:6: cache.trust_file = "{tmp_path / "trust.json"}": no such file; '
        "install it there or fix the path"
    )
    assert f'vision.models_dir = "{tmp_path / "models"}": no such folder' in errors[-1]
    assert lines[-1] == "7 problem(s); nothing was started."


def test_a_models_dir_without_manifest_exits_78(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = write_lane(tmp_path, BASE + '[vision]\nmodels_dir = "models"\n')
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0].startswith(
        f'error: {path}:9: vision.models_dir = "{tmp_path / "models"}": has no manifest.toml'
    )


def test_a_writable_trust_file_is_refused_by_config_check_as_by_run(tmp_path: Path) -> None:
    trust = tmp_path / "trust.json"
    trust.write_text("{}")
    trust.chmod(0o664)
    body = BASE.replace('"credentials.db"\n', '"credentials.db"\ntrust_file = "trust.json"\n', 1)
    path = write_lane(tmp_path, body)
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0].startswith(
        f'error: {path}:6: cache.trust_file = "{trust}": mode 0664 lets others write it'
    )


def test_tls_files_that_do_not_belong_together_are_refused(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    lane = pki.issue("SYS/L1", "lane")
    other = pki.issue("SYS/L2", "other")
    for key in (lane.key, other.key):
        key.chmod(0o600)
    body = BASE + (
        f'[mqtt]\ntls = true\nca_file = "{pki.ca_cert}"\ncert_file = "{lane.cert}"\n'
        f'key_file = "{other.key}"\n'
    )
    path = write_lane(tmp_path, body)
    code, lines = check(path)
    assert code == EX_CONFIG
    assert lines[0].startswith(
        f'error: {path}:11: mqtt.cert_file = "{lane.cert}": with mqtt.key_file = "{other.key}": '
        "not a usable certificate and matching unencrypted private key"
    )
    path.write_text(path.read_text().replace(str(other.key), str(lane.key)))
    code, lines = check(path)
    assert code == 0, lines


def test_a_private_key_readable_by_everyone_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    lane = pki.issue("SYS/L1", "lane")
    lane.key.chmod(0o644)
    body = BASE + (
        f'[mqtt]\ntls = true\nca_file = "{pki.ca_cert}"\ncert_file = "{lane.cert}"\n'
        f'key_file = "{lane.key}"\n'
    )
    path = write_lane(tmp_path, body)
    code, lines = check(path)
    assert code == 0, lines
    assert lines[0].startswith(
        f'warning: {path}:12: mqtt.key_file = "{lane.key}": private key with mode 0644'
    )
    assert lines[-1].startswith(f"{path}: ok: lane SYS/L1")


def test_run_exits_78_on_a_file_problem_before_starting_anything(tmp_path: Path) -> None:
    body = BASE.replace('"credentials.db"\n', '"credentials.db"\ntrust_file = "trust.json"\n', 1)
    path = write_lane(
        tmp_path, body + '[reader]\ntype = "lane_controller"\ndevice = "/dev/pts/99"\n'
    )
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == EX_CONFIG
    assert result.output.splitlines()[0].startswith(
        f'error: {path}:6: cache.trust_file = "{tmp_path / "trust.json"}": no such file'
    )
    assert not (tmp_path / "credentials.db").exists(), "nothing was started"


def test_run_with_a_directory_as_config_exits_78(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--config", str(tmp_path)])
    assert result.exit_code == EX_CONFIG
    assert (
        result.output.splitlines()[0] == f"error: {tmp_path}: (file): cannot read: Is a directory"
    )


def test_the_pages_missing_certificate_key_and_credential_are_each_named(tmp_path: Path) -> None:
    body = BASE + (
        '[page]\nhost = "0.0.0.0"\ncert_file = "page.pem"\nkey_file = "page.key"\n'
        'credential_file = "page.secret"\n'
    )
    path = write_lane(tmp_path, body)
    code, lines = check(path)
    assert code == EX_CONFIG
    errors = [line for line in lines if line.startswith("error: ")]
    assert [line.split(": ")[2].split(" = ")[0] for line in errors] == [
        "page.cert_file",
        "page.key_file",
        "page.credential_file",
    ]
    assert errors[-1].endswith(
        f'page.credential_file = "{tmp_path / "page.secret"}": no such file; '
        "install it there or fix the path"
    )


def test_a_page_credential_readable_by_everyone_is_a_warning(tmp_path: Path) -> None:
    secret = tmp_path / "page.secret"
    secret.write_text("a-long-enough-page-secret\n")
    secret.chmod(0o644)
    path = write_lane(tmp_path, BASE + '[page]\ncredential_file = "page.secret"\n')
    code, lines = check(path)
    assert code == 0, lines
    assert any(
        line.startswith("warning: ") and "page.credential_file" in line and "0644" in line
        for line in lines
    ), lines

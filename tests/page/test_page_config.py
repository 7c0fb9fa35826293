"""The ``[page]`` config: loopback by default; beyond loopback only with TLS and a credential;
its files resolved like the MQTT TLS files; unusable files stop ``run`` with 78 before
anything opens."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config import ConfigError, PageConfig, load_config
from tests.page.conftest import SECRET, make_self_signed

MINIMAL = '[lane]\nport_id = "SYS-0250"\nlane_id = "L03"\n'


def _write(tmp_path: Path, page: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(
        MINIMAL
        + f'[cache]\npath = "{tmp_path / "credentials.db"}"\n'
        + f'[outbox]\npath = "{tmp_path / "outbox.db"}"\n'
        + f"[page]\n{page}\n"
    )
    return path


def test_the_page_is_on_and_on_loopback_by_default(tmp_path: Path) -> None:
    page = load_config(_write(tmp_path, "")).page
    assert page == PageConfig()
    assert (page.enabled, page.host, page.port) == (True, "127.0.0.1", 8470)
    assert page.cert_file is None
    assert page.credential_file is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_needs_neither_tls_nor_a_credential(tmp_path: Path, host: str) -> None:
    assert load_config(_write(tmp_path, f'host = "{host}"')).page.host == host


@pytest.mark.parametrize(
    ("page", "missing"),
    [
        ('host = "0.0.0.0"', "cert_file, key_file, credential_file missing"),
        ('host = "lane-l03.example"', "cert_file, key_file, credential_file missing"),
        (
            'host = "10.20.3.13"\ncert_file = "p.pem"\nkey_file = "p.key"',
            "credential_file missing",
        ),
        ('host = "::"\ncredential_file = "secret"', "cert_file, key_file missing"),
    ],
)
def test_beyond_loopback_without_tls_and_a_credential_is_refused_with_78(
    tmp_path: Path, page: str, missing: str
) -> None:
    path = _write(tmp_path, page)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 78
    first = result.output.splitlines()[0]
    assert first.startswith(f"error: {path}:")
    assert "page" in first
    assert "serves the lane page beyond this computer: it needs TLS and a credential" in first
    assert missing in first


def test_a_disabled_page_may_name_any_host(tmp_path: Path) -> None:
    assert not load_config(_write(tmp_path, 'enabled = false\nhost = "0.0.0.0"')).page.enabled


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(_write(tmp_path, 'cert_file = "page.pem"'))


@pytest.mark.parametrize(
    ("page", "key"),
    [
        ("port = 70000", "page.port"),
        ('host = "http://0.0.0.0"', "page.host"),
        ("max_clients = 0", "page.max_clients"),
        ("status_interval_s = 0.01", "page.status_interval_s"),
        ('port = "8470"', "page.port"),
    ],
)
def test_out_of_bounds_values_name_their_key(tmp_path: Path, page: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, page))
    assert key in str(raised.value.problems[0])


def test_relative_files_are_found_in_the_credentials_directory_or_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = 'cert_file = "page.pem"\nkey_file = "page.key"\ncredential_file = "page-credential"'
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    beside = load_config(_write(tmp_path, page)).page
    assert beside.credential_file == tmp_path / "page-credential"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/lane-agent.service")
    loaded = load_config(_write(tmp_path, page)).page
    assert loaded.cert_file == Path("/run/credentials/lane-agent.service/page.pem")
    assert loaded.credential_file == Path("/run/credentials/lane-agent.service/page-credential")


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (None, 'page.credential_file = "{path}": no such file'),
        ("short\n", "the secret on its first line must be at least 16 characters"),
        ("\n" + SECRET, "the secret on its first line must be at least 16 characters"),
    ],
)
def test_run_exits_78_on_an_unusable_credential_before_opening_anything(
    tmp_path: Path, secret: str | None, expected: str
) -> None:
    credential = tmp_path / "page-credential"
    if secret is not None:
        credential.write_text(secret)
    path = _write(tmp_path, f'credential_file = "{credential}"')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 78, result.output
    assert expected.format(path=credential) in result.output
    assert not (tmp_path / "outbox.db").exists(), "nothing was opened"
    assert not (tmp_path / "credentials.db").exists()


def test_run_exits_78_on_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    one, other = make_self_signed(tmp_path, "one"), make_self_signed(tmp_path, "other")
    path = _write(tmp_path, f'cert_file = "{one.cert}"\nkey_file = "{other.key}"')
    result = CliRunner().invoke(main, ["run", "--config", str(path)])
    assert result.exit_code == 78, result.output
    assert "page.cert_file" in result.output
    assert "not a usable certificate and matching unencrypted private key" in result.output
    assert not (tmp_path / "outbox.db").exists()

"""Config for delivery: TLS files (and $CREDENTIALS_DIRECTORY), the outbox cap, the status interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

MINIMAL = '[lane]\nport_id = "port-7"\nlane_id = "lane-3"\n'
TLS = '[mqtt]\ntls = true\nca_file = "ca.pem"\ncert_file = "lane.pem"\nkey_file = "lane.key"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(text)
    return path


def test_tls_file_names_are_resolved_next_to_the_config_file_without_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(write(tmp_path, MINIMAL + TLS))
    assert (config.mqtt.ca_file, config.mqtt.cert_file, config.mqtt.key_file) == (
        tmp_path / "ca.pem",
        tmp_path / "lane.pem",
        tmp_path / "lane.key",
    )


def test_tls_file_names_are_resolved_in_the_systemd_credentials_directory_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = load_config(
        write(tmp_path, MINIMAL + TLS.replace('"lane.key"', '"/etc/lane-agent/lane.key"'))
    )
    assert config.mqtt.ca_file == credentials / "ca.pem"
    assert config.mqtt.cert_file == credentials / "lane.pem"
    assert config.mqtt.key_file == Path("/etc/lane-agent/lane.key")  # absolute stays absolute


def test_tls_without_its_files_is_refused_naming_the_missing_ones(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[mqtt]\ntls = true\nca_file = "ca.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "tls = true needs cert_file, key_file" in str(caught.value)


def test_tls_files_without_tls_are_refused_instead_of_silently_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[mqtt]\nca_file = "ca.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "only used with tls = true" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("outbox", "max_bytes", "1000"), ("mqtt", "status_interval_s", "0.5")],
)
def test_delivery_settings_out_of_bounds_are_refused(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    path = write(tmp_path, MINIMAL + f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{section}.{key} = {value}" in str(caught.value)

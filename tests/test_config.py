"""Lane config: the example is valid, and every kind of mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import EX_CONFIG, main
from agent.config import ConfigError, load_config
from agent.lane.credentials import Program
from agent.lane.policy import LaneType

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "lane.example.toml"

MINIMAL = '[lane]\nport_id = "SYS-0250"\nlane_id = "L03"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    """The annotated example documents the defaults: loading it equals loading the minimum."""
    example = load_config(EXAMPLE)
    assert example.lane.port_id == "SYS-0250"
    assert example.lane.lane_type is LaneType.TRUSTED_TRAVELLER
    assert example.lane.allowed_programs == (Program.SENTRI, Program.NEXUS, Program.GLOBAL_ENTRY)
    minimal = (
        load_config(write(EXAMPLE.parent.parent / ".pytest_cache", MINIMAL)) if False else None
    )
    assert minimal is None


def test_example_sets_every_key_to_its_default(tmp_path: Path) -> None:
    minimal = load_config(write(tmp_path, MINIMAL))
    example = load_config(EXAMPLE)
    assert example.model_dump(exclude={"cache", "outbox"}) == minimal.model_dump(
        exclude={"cache", "outbox"}
    )
    assert example.cache.path == minimal.cache.path == Path("/var/lib/lane-agent/credentials.db")


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + '[cache]\npath = "data/cache.db"\n'))
    assert config.cache.path == tmp_path / "data" / "cache.db"


def test_client_id_defaults_to_port_and_lane(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).mqtt_client_id == "lane-SYS-0250-L03"


# Each invalid config, the problem line expected (after the file name), one per mistake kind.
INVALID = [
    pytest.param(
        MINIMAL + "[mqtt]\nprot = 1883\n",
        ":5: mqtt.prot = 1883: unknown key; did you mean 'port'? allowed here: ca_file, cert_file, "
        "client_id, host, keepalive_s, key_file, max_inflight, port, reconnect_max_s, reconnect_min_s, "
        "session_expiry_s, status_interval_s, tls, topic_prefix, updates_cert_file, updates_key_file",
        id="misspelt-key",
    ),
    pytest.param(
        MINIMAL + "[mqqt]\nport = 1883\n",
        ":4: mqqt: unknown key; did you mean 'mqtt'? allowed here: cache, camera, controller, lane, live, logging, mqtt, outbox, page, reader, service, "
        "vision",
        id="misspelt-section",
    ),
    pytest.param(
        '[lane]\nport_id = "SYS-0250"\n',
        ":1: lane.lane_id: required key is missing",
        id="missing-required",
    ),
    pytest.param(
        MINIMAL + "[mqtt]\nport = 70000\n",
        ":5: mqtt.port = 70000: input should be less than or equal to 65535",
        id="port-out-of-range",
    ),
    pytest.param(
        MINIMAL + '[mqtt]\nport = "1883"\n',
        ':5: mqtt.port = "1883": input should be a valid integer',
        id="string-for-integer",
    ),
    pytest.param(
        MINIMAL + "[mqtt]\nkeepalive_s = true\n",
        ":5: mqtt.keepalive_s = true: input should be a valid integer",
        id="boolean-for-integer",
    ),
    pytest.param(
        '[lane]\nport_id = "SYS/0250"\nlane_id = "L03"\n',
        ":2: lane.port_id = \"SYS/0250\": must be 1-32 characters of letters, digits, '_', '.', '-', "
        "starting with a letter or digit",
        id="topic-breaking-id",
    ),
    pytest.param(
        MINIMAL + 'lane_type = "express"\n',
        ":4: lane.lane_type = \"express\": input should be 'trusted_traveller' or 'general'",
        id="unknown-lane-type",
    ),
    pytest.param(
        MINIMAL + 'allowed_programs = ["SENTRY"]\n',
        ":4: lane.allowed_programs.0 = \"SENTRY\": input should be 'SENTRI', 'NEXUS', 'GLOBAL_ENTRY', "
        "'FAST' or 'NONE'",
        id="unknown-program",
    ),
    pytest.param(
        MINIMAL + "allowed_programs = []\n",
        ":4: lane.allowed_programs = []: tuple should have at least 1 item after validation, not 0",
        id="no-programs",
    ),
    pytest.param(
        MINIMAL + 'allowed_programs = ["SENTRI", "NONE"]\n',
        ":1: lane: allowed_programs may not contain NONE in a trusted_traveller lane: documents "
        "without a program never qualify for expedited processing",
        id="none-program-in-trusted-lane",
    ),
    pytest.param(
        MINIMAL + "[lane.correlation]\nidle_timeout_s = 60\nmax_open_s = 30\n",
        ":4: lane.correlation: idle_timeout_s (60.0) must be shorter than max_open_s (30.0)",
        id="idle-longer-than-max",
    ),
    pytest.param(
        MINIMAL + "[controller]\nbaudrate = 100000\n",
        ":4: controller: baudrate 100000 is not a standard rate; use one of 9600, 19200, 38400, "
        "57600, 115200, 230400, 460800, 921600",
        id="odd-baudrate",
    ),
    pytest.param(
        MINIMAL + "[controller]\nping_interval_s = 5\nsilence_timeout_s = 4\n",
        ":4: controller: silence_timeout_s (4.0) must be longer than ping_interval_s (5.0), or every "
        "ping gap looks like a dead link",
        id="silence-shorter-than-ping",
    ),
    pytest.param(
        MINIMAL + "[mqtt]\nreconnect_min_s = 30\nreconnect_max_s = 10\n",
        ":4: mqtt: reconnect_min_s (30.0) must not exceed reconnect_max_s (10.0)",
        id="backoff-reversed",
    ),
    pytest.param(
        MINIMAL + '[outbox]\nsynchronous = "OFF"\n',
        ":5: outbox.synchronous = \"OFF\": input should be 'FULL' or 'NORMAL'",
        id="unsafe-synchronous",
    ),
    pytest.param(
        MINIMAL + '[mqtt]\ntopic_prefix = "lanes/#"\n',
        ":5: mqtt.topic_prefix = \"lanes/#\": must be topic levels of letters, digits, '_', '.', '-' "
        "separated by single '/' (no wildcards, no leading or trailing '/')",
        id="wildcard-prefix",
    ),
    pytest.param(
        MINIMAL + "[lane.correlation]\nmin_rssi_dbm = 10\n",
        ":5: lane.correlation.min_rssi_dbm = 10: input should be less than or equal to 0",
        id="positive-rssi",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_each_invalid_config_is_refused_with_its_own_message(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [f"{path}{expected}"]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, '[lane]\nport_id = "A"\n[mqtt]\nport = 0\nhots = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert {p.key for p in caught.value.problems} == {"lane.lane_id", "mqtt.port", "mqtt.hots"}


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[mqtt]\nport = = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.line == 5
    assert str(problem).startswith(f"{path}:5: (syntax): not valid TOML: ")


def test_unreadable_file_is_a_config_problem(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: (file): cannot read: No such file or directory"


def test_cli_config_check_valid_file_prints_a_summary_and_exits_0() -> None:
    result = CliRunner().invoke(main, ["config", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{EXAMPLE}: ok: lane SYS-0250/L03 trusted_traveller programs=SENTRI,NEXUS,GLOBAL_ENTRY "
        "reader=lane_controller:/dev/lane-controller broker=127.0.0.1:1883 client_id=lane-SYS-0250-L03\n"
    )


def test_cli_config_check_misspelt_key_exits_78_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[mqtt]\nprot = 1883\n")
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == EX_CONFIG == 78
    lines = result.output.splitlines()
    assert lines[0].startswith(
        f"error: {path}:5: mqtt.prot = 1883: unknown key; did you mean 'port'?"
    )
    assert lines[-1] == "1 problem(s); nothing was started."


def test_signed_updates_over_tls_need_the_subscribers_own_certificate(tmp_path: Path) -> None:
    """One certificate holds one connection on a broker that ties client ids to certificates."""
    path = write(
        tmp_path,
        MINIMAL
        + '[cache]\ntrust_file = "trust.json"\n'
        + '[mqtt]\ntls = true\nca_file = "ca.pem"\ncert_file = "lane.pem"\nkey_file = "lane.key"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.key == "(top level)"
    assert problem.message.startswith(
        "mqtt.updates_cert_file and mqtt.updates_key_file are required with tls = true"
    )
    assert "CN 'SYS-0250/L03/cache'" in problem.message
    fixed = path.read_text() + 'updates_cert_file = "cache.pem"\nupdates_key_file = "cache.key"\n'
    path.write_text(fixed)
    config = load_config(path)
    assert config.mqtt.updates_cert_file == tmp_path / "cache.pem"


def test_the_retained_current_vehicle_must_outlive_the_longest_stay(tmp_path: Path) -> None:
    """Else a vehicle that stays long without a change vanishes from the booth's late screens."""
    path = write(tmp_path, MINIMAL + "[lane.correlation]\nmax_open_s = 1200\n[live]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.key == "(top level)"
    assert problem.message.startswith(
        "live.current_expiry_s (900) must be longer than lane.correlation.max_open_s (1200)"
    )
    path.write_text(path.read_text() + "current_expiry_s = 1500\n")
    assert load_config(path).live.current_expiry_s == 1500
    path.write_text(MINIMAL + "[lane.correlation]\nmax_open_s = 1200\n[live]\nenabled = false\n")
    assert load_config(path).live.enabled is False

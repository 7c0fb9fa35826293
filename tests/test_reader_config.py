"""The ``[reader]`` section: the family chosen by its ``type`` key, every mistake named with its
file, line, key and what is allowed, and files written before reader families still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    ConfigError,
    LaneControllerReaderConfig,
    LlrpReaderConfig,
    load_config,
)

LANE = '[lane]\nport_id = "SYS-0250"\nlane_id = "L03"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(problem).removeprefix(f"{path}") for problem in caught.value.problems]


def test_without_a_reader_section_the_lane_controller_is_read_on_its_default_device(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, LANE))
    assert isinstance(config.reader, LaneControllerReaderConfig)
    assert config.reader.device == "/dev/lane-controller"


def test_an_llrp_reader_needs_only_its_host(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LANE + '[reader]\ntype = "llrp"\nhost = "10.0.12.21"\n'))
    reader = config.reader
    assert isinstance(reader, LlrpReaderConfig)
    assert (reader.host, reader.port, reader.antennas, reader.loop_gpi_ports) == (
        "10.0.12.21",
        5084,
        (1,),
        (1,),
    )
    assert reader.signal_gpo_port is None
    assert reader.clock_settings().step_tolerance_s == 1.0


@pytest.mark.parametrize(
    "host", ["reader-12.lane.example", "10.0.12.21", "fe80::1", "[2001:db8::7]", "R700"]
)
def test_host_names_and_addresses_are_accepted(tmp_path: Path, host: str) -> None:
    config = load_config(write(tmp_path, LANE + f'[reader]\ntype = "llrp"\nhost = "{host}"\n'))
    assert isinstance(config.reader, LlrpReaderConfig)
    assert config.reader.host == host


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        pytest.param(
            '[reader]\ndevice = "/dev/ttyUSB0"\n',
            ":4: reader.type: required key is missing; one of: lane_controller, llrp",
            id="no-type",
        ),
        pytest.param(
            '[reader]\ntype = "impinj"\nhost = "r1"\n',
            ':5: reader.type = "impinj": unknown reader family; one of: lane_controller, llrp',
            id="unknown-family",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\n',
            ":4: reader.host: required key is missing",
            id="llrp-without-host",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "tcp://10.0.12.21"\n',
            ':6: reader.host = "tcp://10.0.12.21": must be a host name or an IP address, '
            "without a scheme, port or spaces",
            id="host-as-url",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\nhots = "r2"\n',
            ":7: reader.hots = \"r2\": unknown key; did you mean 'host'? allowed here: antennas, "
            "clock_max_drift_ppm, clock_step_tolerance_s, connect_timeout_s, host, keepalive_s, "
            "loop_gpi_ports, loop_occupied_when_high, port, read_tid, reconnect_max_s, "
            "reconnect_min_s, report_every_n_tags, reset_on_connect, signal_gpo_port, "
            "silence_timeout_s, timestamps, type",
            id="misspelt-llrp-key",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\ndevice = "/dev/ttyUSB0"\n',
            ':7: reader.device = "/dev/ttyUSB0": unknown key; allowed here: antennas, '
            "clock_max_drift_ppm, clock_step_tolerance_s, connect_timeout_s, host, keepalive_s, "
            "loop_gpi_ports, loop_occupied_when_high, port, read_tid, reconnect_max_s, "
            "reconnect_min_s, report_every_n_tags, reset_on_connect, signal_gpo_port, "
            "silence_timeout_s, timestamps, type",
            id="lane-controller-key-on-llrp",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\nantennas = [1, 2, 1]\n',
            ":4: reader: antennas [1, 2, 1] lists a port twice",
            id="antenna-twice",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\nantennas = [0]\n',
            ":7: reader.antennas.0 = 0: input should be greater than or equal to 1",
            id="antenna-zero",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\nkeepalive_s = 5\nsilence_timeout_s = 4\n',
            ":4: reader: silence_timeout_s (4.0) must be longer than keepalive_s (5.0), or every "
            "keepalive gap looks like a dead reader",
            id="silence-shorter-than-keepalive",
        ),
        pytest.param(
            '[reader]\ntype = "llrp"\nhost = "r1"\ntimestamps = "local"\n',
            ":7: reader.timestamps = \"local\": input should be 'auto', 'uptime' or 'utc'",
            id="unknown-timestamps",
        ),
        pytest.param(
            '[reader]\ntype = "lane_controller"\nbaudrate = 100000\n',
            ":4: reader: baudrate 100000 is not a standard rate; use one of 9600, 19200, 38400, "
            "57600, 115200, 230400, 460800, 921600",
            id="lane-controller-baudrate",
        ),
    ],
)
def test_each_reader_mistake_is_named_with_its_line_key_and_what_is_allowed(
    tmp_path: Path, section: str, expected: str
) -> None:
    assert problems(write(tmp_path, LANE + section)) == [expected]


def test_a_controller_section_of_an_older_file_is_the_lane_controller_reader(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(tmp_path, LANE + '[controller]\ndevice = "/dev/ttyACM3"\nping_interval_s = 1.0\n')
    )
    assert isinstance(config.reader, LaneControllerReaderConfig)
    assert (config.reader.device, config.reader.ping_interval_s) == ("/dev/ttyACM3", 1.0)


def test_a_controller_section_beside_a_reader_section_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        LANE + '[controller]\ndevice = "/dev/ttyACM3"\n[reader]\ntype = "llrp"\nhost = "r1"\n',
    )
    [problem] = problems(path)
    assert problem.startswith(": (top level): [controller] and [reader] are both given")

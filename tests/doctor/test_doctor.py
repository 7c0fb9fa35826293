"""`lane-agent doctor` against a broken lane and a healthy one, made of real parts: Mosquitto,
the controller simulator on a pty, the LLRP emulator, a SQLite cache, the shipped models and
camera frames in a folder."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from agent.cache import CredentialCache
from agent.cli import main
from agent.dev.demo import DEMO_ROI, demo_records
from agent.dev.synthetic_camera import render_scene
from agent.doctor import run_doctor
from agent.doctor.host import check_unit_security, parse_exposure
from agent.doctor.report import State
from agent.doctor.runner import DoctorResult
from firmware_bridge.scenario import load_scenario
from firmware_bridge.simulator import ControllerSimulator
from llrp.emulator import LlrpReaderEmulator
from tests.doctor.lanes import write_lane
from tests.support.broker import MosquittoBroker
from tests.support.pki import TestPki
from tests.uplink.test_broker_config import render_reference_config

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = "2"


def parse(line: str) -> tuple[str, str]:
    """``("broker tls", "SKIP")`` from a report line: state, name padded to two spaces, detail."""
    found = re.match(r"^(OK|WARN|FAIL|SKIP) +(\S+(?: \S+)?)  ", line)
    assert found, line
    return found.group(2), found.group(1)


def doctor(config: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["doctor", "--config", str(config), "--timeout", TIMEOUT, *extra]
    )
    return result.exit_code, result.output


@pytest.fixture
def simulator() -> Iterator[ControllerSimulator]:
    controller = ControllerSimulator(load_scenario(ROOT / "config/scenarios/basic.toml"))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def import_cache(path: Path) -> None:
    with CredentialCache.open(path) as cache:
        cache.import_records(demo_records(), source="test")


def camera_folder(directory: Path) -> Path:
    directory.mkdir()
    rng = random.Random(5)
    for number, plate in enumerate(("DEMO001", "DEMO002")):
        cv2.imwrite(str(directory / f"{number:03}.png"), render_scene(plate, "CA", rng=rng))
    return directory


def healthy_lane(directory: Path, broker: MosquittoBroker, reader: str) -> Path:
    import_cache(directory / "credentials.db")
    frames = camera_folder(directory / "frames")
    return write_lane(
        directory,
        '[cache]\npath = "credentials.db"\n'
        '[outbox]\npath = "outbox.db"\nmax_bytes = 16777216\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'[camera]\nenabled = true\nsource = "{frames}"\nroi = {list(DEMO_ROI)}\n'
        f"{reader}",
    )


def test_a_healthy_lane_is_all_ok_or_skipped_and_exits_0(
    tmp_path: Path, mosquitto: MosquittoBroker, simulator: ControllerSimulator
) -> None:
    config = healthy_lane(
        tmp_path,
        mosquitto,
        f'[reader]\ntype = "lane_controller"\ndevice = "{simulator.device_path}"\n',
    )
    snapshot = tmp_path / "snapshot.jpg"
    code, output = doctor(config, "--snapshot", str(snapshot))
    lines = output.splitlines()
    assert code == 0, output
    states = dict(parse(line) for line in lines[:-1] if not line.startswith(" "))
    assert all(state in ("OK", "SKIP") for state in states.values()), output
    for name in ("config", "reader", "camera", "models", "cache", "outbox disk"):
        assert states[name] == "OK", output
    assert states["broker tls"] == "SKIP"
    assert states["broker mqtt"] == "OK"
    reader = next(line for line in lines if line.startswith("OK    reader "))
    assert f"on {simulator.device_path}: firmware " in reader
    assert "CRC errors 0" in reader
    assert "test plate read as ABC1234" in output
    assert "6 credentials" in output
    assert [name for name in states if name.startswith("broker")] == [
        "broker dns",
        "broker tcp",
        "broker tls",
        "broker mqtt",
    ]
    image = cv2.imread(str(snapshot))
    assert image is not None
    assert image.shape[:2] == (480, 640)
    x, y, w, _ = DEMO_ROI
    blue, green, red = (int(v) for v in image[y, x + w // 2])
    assert green > 150 > max(blue, red), "the ROI's top edge is drawn in green"


def test_the_reader_check_leaves_the_controllers_events_for_the_agent(tmp_path: Path) -> None:
    """Events the controller holds are read but never acknowledged: the agent still gets them."""
    scenario = load_scenario(ROOT / "config/scenarios/basic.toml")
    controller = ControllerSimulator(scenario, speed=50, start_on_host=False, host_timeout_s=None)
    controller.start()
    try:
        config = write_lane(
            tmp_path, f'[reader]\ntype = "lane_controller"\ndevice = "{controller.device_path}"\n'
        )
        _, output = doctor(config)
        acks = controller.stats().acks_received
        sent = len(controller.sent_events())
    finally:
        controller.stop()
    assert "OK    reader" in output, output
    assert sent >= 1, "the controller sent events while the doctor listened"
    assert acks <= 1, "only the HELLO may be acknowledged"


def test_a_broken_lane_names_every_broken_part_with_its_fix(tmp_path: Path) -> None:
    config = write_lane(
        tmp_path,
        '[cache]\npath = "credentials.db"\ntrust_file = "trust.json"\n'
        '[outbox]\npath = "outbox.db"\n'
        '[mqtt]\nhost = "no-such-host.invalid"\ntls = true\nca_file = "ca.pem"\n'
        'cert_file = "lane.pem"\nkey_file = "lane.key"\n'
        'updates_cert_file = "cache.pem"\nupdates_key_file = "cache.key"\n'
        '[vision]\nmodels_dir = "models"\n'
        '[reader]\ntype = "lane_controller"\ndevice = "/dev/pts/99"\n',
    )
    code, output = doctor(config)
    assert code == 1, output
    result = run_doctor(config, timeout_s=2.0)
    config_keys = sorted(
        c.detail.split(": ")[1].split(" = ")[0]
        for c in result.checks
        if c.name == "config" and c.state is State.FAIL
    )
    assert config_keys == sorted(
        [
            "cache.trust_file",
            "mqtt.ca_file",
            "mqtt.cert_file",
            "mqtt.key_file",
            "mqtt.updates_cert_file",
            "mqtt.updates_key_file",
            "vision.models_dir",
        ]
    ), output
    by_name = {c.name: c for c in result.checks}
    assert by_name["reader"].state is State.FAIL
    assert by_name["reader"].detail == "lane controller /dev/pts/99: no such device"
    assert by_name["models"].state is State.FAIL
    assert by_name["broker dns"].state is State.FAIL
    assert by_name["broker dns"].detail.startswith("no-such-host.invalid: cannot be resolved")
    assert "broker tcp" not in by_name, "nothing past the first broken broker step"
    assert by_name["cache"].state is State.FAIL
    assert by_name["cache trust"].state is State.FAIL
    for check in result.checks:
        if check.state is State.FAIL:
            assert check.fix, check
            assert f"{check.state.value:<4}  {check.name}" in output
    assert output.count("fix: ") >= sum(c.state is State.FAIL for c in result.checks)


def test_json_lists_every_check_with_state_detail_and_fix(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = write_lane(
        tmp_path,
        '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        '[reader]\ntype = "lane_controller"\ndevice = "/dev/pts/99"\n',
    )
    code, output = doctor(config, "--json")
    assert code == 1
    document = json.loads(output)
    assert set(document) == {"checks", "counts", "exit_code"}
    assert document["exit_code"] == 1
    for check in document["checks"]:
        assert set(check) == {"name", "state", "detail", "fix"}
        assert check["state"] in ("OK", "WARN", "FAIL", "SKIP")
        if check["state"] == "FAIL":
            assert check["fix"]
    names = [c["name"] for c in document["checks"]]
    assert names[:4] == ["config", "reader", "camera", "models"]
    assert sum(document["counts"].values()) == len(document["checks"])
    assert {c["name"]: c["state"] for c in document["checks"]}["reader"] == "FAIL"


def test_a_config_that_cannot_be_loaded_exits_78(tmp_path: Path) -> None:
    config = write_lane(tmp_path, '[mqtt]\nhost = "tcp://broker:1883"\n')
    code, output = doctor(config)
    assert code == 78
    assert output.startswith(
        f'FAIL  config   {config}:5: mqtt.host = "tcp://broker:1883": must be a host name'
    )
    assert "reader" not in output, "nothing that needs the config is checked"


def test_an_llrp_reader_reports_its_capabilities(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    emulator = LlrpReaderEmulator()
    emulator.start()
    try:
        config = write_lane(
            tmp_path,
            '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
            f'[reader]\ntype = "llrp"\nhost = "127.0.0.1"\nport = {emulator.port}\n'
            "antennas = [1, 2]\nsignal_gpo_port = 9\n",
        )
        result = run_doctor(config, timeout_s=2.0)
    finally:
        emulator.stop()
    reader = next(c for c in result.checks if c.name == "reader")
    assert reader.state is State.FAIL
    assert reader.detail.startswith(f"LLRP reader 127.0.0.1:{emulator.port}: manufacturer 0")
    assert "firmware llrp-emulator 1.0, 4 antennas, 2 GPIs, 4 GPOs" in reader.detail
    assert reader.detail.endswith("the config asks for GPO 9")


def test_systemd_is_skipped_with_the_reason_where_it_is_not_init() -> None:
    check = check_unit_security()
    if not Path("/run/systemd/system").is_dir():
        assert check.state is State.SKIP
        assert check.detail.startswith("systemd is not the init system here (PID 1 is ")
    else:
        assert check.state in (State.OK, State.WARN, State.SKIP)


def test_the_exposure_is_read_from_systemd_analyze_output() -> None:
    """The shipped unit, analysed offline by the real tool: the figure the doctor would report."""
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (apt-get install systemd)"
    report = subprocess.run(
        [
            analyze,
            "security",
            "--offline=true",
            "--no-pager",
            str(ROOT / "systemd/lane-agent.service"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    parsed = parse_exposure(report.stdout)
    assert parsed is not None, report.stdout[-500:]
    score, rating = parsed
    assert 0.0 <= score <= 10.0
    assert rating in ("OK", "SAFE", "MEDIUM", "EXPOSED", "UNSAFE")


def _doctor_against_tls_broker(
    tmp_path: Path, broker_pki: TestPki, lane_pki: TestPki
) -> tuple[DoctorResult, int]:
    """The doctor on a mutual-TLS lane (certificate from ``lane_pki``) against the shipped
    broker config with ``broker_pki``; its result and the broker's port."""
    lane = lane_pki.issue("SYS/L1", "lane")
    broker = MosquittoBroker(
        tmp_path / "broker",
        render_config=lambda port, work: render_reference_config(broker_pki, port, work),
    )
    broker.start()
    try:
        config = write_lane(
            tmp_path,
            '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
            f'[mqtt]\nhost = "localhost"\nport = {broker.port}\ntls = true\n'
            f'ca_file = "{lane_pki.ca_cert}"\ncert_file = "{lane.cert}"\nkey_file = "{lane.key}"\n',
        )
        return run_doctor(config, timeout_s=2.0), broker.port
    finally:
        broker.stop()


def test_a_tls_lane_reports_the_handshake_and_the_days_left_on_its_certificates(
    tmp_path: Path,
) -> None:
    """The shipped broker config (mutual TLS, the certificate is the identity): the test CA's
    certificates last two days, so the doctor warns that they expire within 30."""
    pki = TestPki(tmp_path / "pki")
    result, port = _doctor_against_tls_broker(tmp_path, pki, pki)
    by_name = {c.name: c for c in result.checks}
    tls = by_name["broker tls"]
    assert tls.state is State.WARN, tls
    assert tls.detail.startswith(f"localhost:{port}: TLSv1.")
    assert "broker certificate expires in 2 days, this lane's (lane.pem) in 2 days" in tls.detail
    assert tls.fix.startswith("renew the certificate that expires within 30 days")
    mqtt = by_name["broker mqtt"]
    assert mqtt.state is State.OK, mqtt
    assert mqtt.detail == f"localhost:{port}: CONNACK Success as lane-SYS-L1 (MQTT v5)"


def test_a_broker_that_does_not_know_the_lanes_ca_fails_the_tls_step(tmp_path: Path) -> None:
    broker_pki = TestPki(tmp_path / "broker-pki")
    lane_pki = TestPki(tmp_path / "lane-pki")
    result, _ = _doctor_against_tls_broker(tmp_path, broker_pki, lane_pki)
    by_name = {c.name: c for c in result.checks}
    assert by_name["broker tls"].state is State.FAIL
    assert "the broker's certificate is not accepted" in by_name["broker tls"].detail
    assert "mqtt.ca_file must hold the CA" in by_name["broker tls"].fix
    assert "broker mqtt" not in by_name
    assert result.exit_code == 1

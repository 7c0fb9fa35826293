"""The simulated controller, driven by a hand-written host, and its command-line entry point."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.codec import (
    Ack,
    DecodedFrame,
    Fault,
    FaultCode,
    FrameDecoder,
    Heartbeat,
    Hello,
    Loop,
    Message,
    Ping,
    PingFlags,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    encode_frame,
)
from firmware_bridge.link import LinkUp
from firmware_bridge.scenario_dump import dump_scenario
from firmware_bridge.scenario_plan import plan_scenario
from firmware_bridge.simulator import run_simulator_cli
from tests.firmware_bridge.conftest import WAIT_S, Collector, small_scenario

EVENT_TYPES = (Hello, TagRead, Loop, Fault)


class RawHost:
    """The agent's end of the pty, by hand: every frame seen, nothing acknowledged unasked."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.decoder = FrameDecoder(name="raw host")
        self.frames: list[DecodedFrame] = []

    def close(self) -> None:
        os.close(self.fd)

    def send(self, message: Message, seq: int = 0) -> None:
        os.write(self.fd, encode_frame(message, seq))

    def read_until(
        self,
        predicate: Callable[[list[DecodedFrame]], bool],
        timeout: float = WAIT_S,
        *,
        ack_events: bool = False,
    ) -> list[DecodedFrame]:
        deadline = time.monotonic() + timeout
        while not predicate(self.frames):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out after {len(self.frames)} frames"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                new = self.decoder.feed(os.read(self.fd, 4096))
                self.frames += new
                for frame in new:
                    if ack_events and isinstance(frame.message, EVENT_TYPES):
                        self.send(Ack(frame.seq))
        return self.frames

    def events(self) -> list[DecodedFrame]:
        return [f for f in self.frames if isinstance(f.message, EVENT_TYPES)]


@pytest.fixture
def raw_host():
    hosts: list[RawHost] = []

    def connect(path: str) -> RawHost:
        host = RawHost(path)
        hosts.append(host)
        return host

    yield connect
    for host in hosts:
        host.close()


def count(kind: type, frames: list[DecodedFrame]) -> int:
    return sum(isinstance(f.message, kind) for f in frames)


def test_controller_sends_nothing_but_hello_until_the_hello_is_acknowledged(
    make_simulator, raw_host
):
    simulator = make_simulator(small_scenario(2), start_on_host=False)
    host = raw_host(simulator.device_path)

    host.read_until(lambda frames: count(Hello, frames) >= 3 and count(Heartbeat, frames) >= 1)
    hellos = host.events()
    assert all(isinstance(f.message, Hello) for f in hellos)
    assert {(f.seq, f.message.resume_seq) for f in hellos} == {(0, 0)}  # resends, same seq

    host.send(Ack(0))
    host.read_until(lambda _: count(Loop, host.events()) >= 1)
    first_event = next(f for f in host.events() if not isinstance(f.message, Hello))
    assert first_event.seq == 1


def test_controller_answers_ping_and_a_hello_request_says_where_to_resume(make_simulator, raw_host):
    simulator = make_simulator(small_scenario(3))
    host = raw_host(simulator.device_path)
    host.read_until(lambda frames: count(Hello, frames) >= 1)
    host.send(Ack(0))
    host.read_until(lambda _: len({f.seq for f in host.events()}) >= 4)  # HELLO + 3 unacked
    host.send(Ack(2))  # seq 1 stays unacknowledged: the controller must resume there

    host.send(Ping(0xC0FFEE, PingFlags.HELLO_REQUEST))

    frames = host.read_until(
        lambda frames: (
            any(isinstance(f.message, Hello) and f.seq > 0 for f in frames)
            and any(isinstance(f.message, Pong) for f in frames)
        )
    )
    assert Pong(0xC0FFEE) in [f.message for f in frames]
    requested = next(f for f in frames if isinstance(f.message, Hello) and f.seq > 0)
    assert requested.message.resume_seq == 1
    assert requested.message.boot_id == simulator.boot_id


def test_controller_acknowledges_set_signal_and_records_each_command_once(make_simulator, raw_host):
    simulator = make_simulator(small_scenario(1))
    host = raw_host(simulator.device_path)

    for _ in range(3):  # one command, sent three times as a resend would
        host.send(SetSignal(SignalState.STOP), 41)
    host.send(SetSignal(SignalState.MANUAL), 42)

    host.read_until(lambda frames: Ack(42) in [f.message for f in frames])
    assert [f.message for f in host.frames if isinstance(f.message, Ack)] == [Ack(41)] * 3 + [
        Ack(42)
    ]
    assert simulator.signal_history == [SignalState.STOP, SignalState.MANUAL]
    assert simulator.current_signal is SignalState.MANUAL


def test_controller_falls_back_to_manual_when_the_host_goes_silent(make_simulator, raw_host):
    simulator = make_simulator(small_scenario(1), host_timeout_s=0.3)
    host = raw_host(simulator.device_path)
    host.read_until(lambda frames: count(Hello, frames) >= 1)
    host.send(SetSignal(SignalState.PROCEED), 1)
    assert simulator.wait_signal(SignalState.PROCEED, WAIT_S)
    host.send(Ack(0))

    assert simulator.wait_signal(SignalState.MANUAL, WAIT_S)
    # The FAULT queues behind the unacknowledged events; it arrives once the host is back.
    host.read_until(
        lambda frames: any(
            isinstance(f.message, Fault) and f.message.code == FaultCode.HOST_SILENT for f in frames
        ),
        ack_events=True,
    )
    assert simulator.stats().failsafe_activations == 1


class FlushedText(io.StringIO):
    """Captures output and signals when it is flushed (the CLI flushes the device path)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        super().flush()
        self.flushed.set()


def run_cli_in_thread(
    path: Path, speed: float, **kwargs
) -> tuple[FlushedText, io.StringIO, list[int], threading.Thread]:
    out, err, result = FlushedText(), io.StringIO(), []
    thread = threading.Thread(
        target=lambda: result.append(run_simulator_cli(path, speed, out, err=err, **kwargs)),
        daemon=True,
    )
    thread.start()
    return out, err, result, thread


def test_simulate_prints_the_pty_path_plays_the_scenario_and_exits_0_once_acknowledged(
    tmp_path: Path, make_link
):
    scenario = small_scenario(3, seed=6)
    path = tmp_path / "s.toml"
    path.write_text(dump_scenario(scenario))
    out, err, result, thread = run_cli_in_thread(path, 2.0)
    assert out.flushed.wait(WAIT_S)
    device = out.getvalue().strip()
    assert device.startswith("/dev/pts/")

    collector = Collector()
    make_link(device, collector)
    thread.join(WAIT_S)

    assert result == [0]
    assert err.getvalue() == ""
    assert len(collector.events()) == len(plan_scenario(scenario))
    assert not os.path.exists(device)


def test_simulate_exits_1_when_the_agent_stops_acknowledging(tmp_path: Path, make_link):
    path = tmp_path / "s.toml"
    path.write_text(dump_scenario(small_scenario(2)))
    out, err, result, thread = run_cli_in_thread(path, 4.0, drain_timeout_s=0.3)
    assert out.flushed.wait(WAIT_S)
    collector = Collector()
    link = make_link(out.getvalue().strip(), collector)
    assert collector.wait_for_type(LinkUp)
    link.close()

    thread.join(WAIT_S)

    assert result == [1]
    assert "events still unacknowledged 0.3 s after the scenario ended" in err.getvalue()


@pytest.mark.parametrize(
    ("speed", "content", "message"),
    [
        (1.0, '[scenario]\nname = "x"\n', "error: {path}: vehicles: expected at least one vehicle"),
        (0.0, "", "error: --speed must be greater than 0, got 0.0"),
    ],
)
def test_simulate_rejects_a_bad_scenario_or_speed_with_exit_2(
    tmp_path: Path, speed: float, content: str, message: str
):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    out, err = io.StringIO(), io.StringIO()

    assert run_simulator_cli(path, speed, out, err=err) == 2

    assert err.getvalue().startswith(message.format(path=path))
    assert out.getvalue() == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_simulate_stops_cleanly_on_sigterm_and_sigint(tmp_path: Path, signum: int):
    path = tmp_path / "s.toml"
    path.write_text(dump_scenario(small_scenario(2)))
    code = (
        "import sys; from pathlib import Path; "
        "from firmware_bridge.simulator import run_simulator_cli; "
        "sys.exit(run_simulator_cli(Path(sys.argv[1]), 1.0, sys.stdout))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        device = process.stdout.readline().strip()
        assert os.path.exists(device)

        process.send_signal(signum)
        _, stderr = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 128 + signum
    assert "Traceback" not in stderr
    assert not os.path.exists(device)

"""The reader check: the lane controller on its serial port, or an LLRP reader on the network.

The doctor only listens: it never changes the reader's settings and never acknowledges a card
read or loop edge (the controller keeps them for the agent), so running it on a live lane loses
nothing. A port or reader already held by the running agent is a WARN, not a FAIL: the link is
probably fine, the doctor just cannot have it too.
"""

from __future__ import annotations

import os
import threading
import time

import serial

from agent.config import LlrpReaderConfig
from agent.config.readers import LaneControllerConfig
from agent.doctor.report import Check, fail, ok, warn
from firmware_bridge.link import ControllerEvent, ControllerLink, EventDeferred, EventOrigin
from llrp.client import (
    LlrpClient,
    LlrpConnectionError,
    LlrpTimeoutError,
    ReaderRefusedConnectionError,
)
from llrp.codec import LlrpError
from llrp.messages import GetReaderCapabilities
from llrp.parameters import ConnectionAttemptStatus

NAME = "reader"
_STOP_AGENT = "stop the agent first (systemctl stop lane-agent) to test the reader itself"


def check_reader(reader: LaneControllerConfig | LlrpReaderConfig, timeout_s: float) -> Check:
    if isinstance(reader, LlrpReaderConfig):
        return check_llrp(reader, timeout_s)
    return check_lane_controller(reader, timeout_s)


def check_lane_controller(config: LaneControllerConfig, timeout_s: float) -> Check:
    """Open the port, wait for the controller's HELLO and a PONG, report firmware and counters."""
    device = config.device
    if not os.path.exists(device):
        return fail(
            NAME,
            f"lane controller {device}: no such device",
            "check the controller's power and USB cable (dmesg | tail); the udev rule shipped "
            "with the unit (60-lane-controller.rules) names it /dev/lane-controller; or correct "
            "reader.device",
        )
    try:
        serial.Serial(device, config.baudrate, timeout=0, exclusive=True).close()
    except (serial.SerialException, OSError, ValueError) as exc:
        text = str(exc)
        if "lock" in text.lower() or "busy" in text.lower():
            return warn(
                NAME, f"lane controller {device}: in use by another process ({text})", _STOP_AGENT
            )
        return fail(
            NAME,
            f"lane controller {device}: cannot open ({text})",
            "the lane-agent user needs read/write access to the port (group dialout, or the "
            "shipped udev rule); check that reader.device is a serial port",
        )
    got_hello = threading.Event()

    def on_message(_message: object) -> None:
        if link.hello is not None:
            got_hello.set()

    def keep_event(_event: ControllerEvent, _origin: EventOrigin | None) -> None:
        raise EventDeferred  # not acknowledged: the controller keeps it for the agent

    ping = max(0.1, min(0.5, timeout_s / 4))
    link = ControllerLink(
        device,
        on_message,
        on_event=keep_event,
        baudrate=config.baudrate,
        ping_interval_s=ping,
        silence_timeout_s=max(timeout_s, ping * 2),
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )
    deadline = time.monotonic() + timeout_s
    listen_s = min(1.0, timeout_s / 2)  # after the HELLO: frames and errors on a live line
    heard_at: float | None = None
    with link:
        link.start()
        while (now := time.monotonic()) < deadline:
            if heard_at is None and link.hello is not None:
                heard_at = now
            if heard_at is not None and now - heard_at >= listen_s and link.stats().pongs_received:
                break
            got_hello.wait(0.05)
        hello = link.hello
        stats = link.stats()
    counters = (
        f"frames {stats.frames_ok}, CRC errors {stats.crc_errors}, framing errors "
        f"{stats.framing_errors}, bytes skipped to resync {stats.bytes_discarded}"
    )
    if hello is None:
        return fail(
            NAME,
            f"lane controller {device}: no HELLO within {timeout_s:g} s ({counters})",
            "check the controller is powered and running its firmware; bytes skipped or CRC "
            f"errors point at the line speed (reader.baudrate = {config.baudrate}) or wiring",
        )
    rtt = "" if stats.last_rtt_s is None else f", ping {stats.last_rtt_s * 1000:.1f} ms"
    detail = (
        f"lane controller {hello.controller_id} on {device}: firmware {hello.firmware_version}, "
        f"protocol {hello.protocol_version}, boot {hello.boot_id:08x}{rtt}; {counters}"
    )
    if stats.crc_errors or stats.framing_errors:
        return warn(
            NAME,
            detail,
            "damaged frames on the serial line: check the cable, its shielding and reader.baudrate",
        )
    return ok(NAME, detail)


def check_llrp(config: LlrpReaderConfig, timeout_s: float) -> Check:
    """Connect, read the capabilities and compare them with what the config asks for."""
    where = f"LLRP reader {config.host}:{config.port}"
    client = LlrpClient(config.host, config.port)
    try:
        client.connect(timeout_s)
    except ReaderRefusedConnectionError as exc:
        if exc.status == ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS:
            return warn(NAME, f"{where}: another client is connected ({exc})", _STOP_AGENT)
        return fail(NAME, f"{where}: {exc}", "restart the reader, then run the doctor again")
    except (LlrpTimeoutError, LlrpConnectionError) as exc:
        return fail(
            NAME,
            f"{where}: {exc}",
            "check the reader's power and network cable, that reader.host and reader.port "
            "(LLRP is 5084) are right, and that no firewall blocks the port",
        )
    try:
        capabilities = client.request(GetReaderCapabilities(), timeout_s)
    except LlrpError as exc:
        return fail(NAME, f"{where}: capabilities not read ({exc})", "restart the reader")
    finally:
        client.close(timeout_s)
    general = capabilities.general_device_capabilities
    if general is None:
        return warn(
            NAME,
            f"{where}: connected, but it does not describe itself (no general device capabilities)",
        )
    gpio = general.gpio_capabilities
    detail = (
        f"{where}: manufacturer {general.device_manufacturer_name}, model {general.model_name}, "
        f"firmware {general.reader_firmware_version}, {general.max_number_of_antenna_supported} "
        f"antennas, {gpio.num_gpis} GPIs, {gpio.num_gpos} GPOs, UTC clock "
        f"{'yes' if general.has_utc_clock_capability else 'no'}"
    )
    missing = [
        f"antenna {a}" for a in config.antennas if a > general.max_number_of_antenna_supported
    ]
    missing += [f"GPI {p}" for p in config.loop_gpi_ports if p > gpio.num_gpis]
    if config.signal_gpo_port is not None and config.signal_gpo_port > gpio.num_gpos:
        missing.append(f"GPO {config.signal_gpo_port}")
    if missing:
        return fail(
            NAME,
            f"{detail}; the config asks for {', '.join(missing)}",
            "correct reader.antennas, reader.loop_gpi_ports or reader.signal_gpo_port to ports "
            "the reader has",
        )
    return ok(NAME, detail)

"""``lane-agent demo``: the agent's main job on simulated lane hardware, end to end.

Real parts throughout: the controller simulator on a pseudo-terminal speaks the same protocol
as lane firmware, a private Mosquitto stands in for central's broker, the credential cache and
the outbox are SQLite files, and a subscriber prints each crossing as central operations would
receive it. Without a Mosquitto binary the demo still runs and shows the crossings waiting in
the outbox, which is exactly what a lane does while its uplink is down.

It exits 0 only when every part it shows worked: every vehicle's crossing arrived, and no
crossing says its plate could not be read because the plate reader or the camera was
unavailable. Otherwise it names the broken part and exits 1.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.cache import CredentialCache
from agent.config import (
    AgentConfig,
    CacheConfig,
    CameraConfig,
    LaneConfig,
    LaneControllerReaderConfig,
    LlrpReaderConfig,
    LoggingConfig,
    MqttConfig,
    OutboxConfig,
    PageConfig,
    VisionConfig,
)
from agent.dev.broker import (
    INSTALL_HINT,
    BrokerUnavailableError,
    PrivateMosquitto,
    free_loopback_port,
)
from agent.lane.credentials import CredentialStatus, DocumentType, Program
from agent.service import LaneService
from agent.state import Outbox
from agent.wire.topics import all_crossings_filter, all_live_filter
from firmware_bridge.scenario import Scenario, generate_scenario
from firmware_bridge.scenario_plan import plan_scenario
from firmware_bridge.simulator import ControllerSimulator
from llrp.emulator import LlrpReaderEmulator

logger = logging.getLogger(__name__)

_NOW = datetime.now(tz=UTC).replace(microsecond=0)
# The demo cache: the card references the shipped scenarios use (config/scenarios/basic.toml),
# with a spread of programs and statuses so every kind of recommendation shows up.
DEMO_CREDENTIALS: tuple[tuple[str, Program, CredentialStatus, datetime], ...] = (
    (
        "E280689400005003A4B1C201",
        Program.SENTRI,
        CredentialStatus.ACTIVE,
        _NOW + timedelta(days=900),
    ),
    (
        "E280689400005003A4B1C202",
        Program.NEXUS,
        CredentialStatus.ACTIVE,
        _NOW + timedelta(days=400),
    ),
    (
        "E280689400005003A4B1C203",
        Program.SENTRI,
        CredentialStatus.ACTIVE,
        _NOW + timedelta(days=1500),
    ),
    (
        "E280689400005003A4B1C204",
        Program.GLOBAL_ENTRY,
        CredentialStatus.ACTIVE,
        _NOW + timedelta(days=700),
    ),
    ("E280689400005003A4B1C205", Program.FAST, CredentialStatus.ACTIVE, _NOW + timedelta(days=300)),
    (
        "E280689400005003A4B1C206",
        Program.SENTRI,
        CredentialStatus.REVOKED,
        _NOW + timedelta(days=200),
    ),
)
_KNOWN_REFS = tuple(ref for ref, *_ in DEMO_CREDENTIALS)
BROKEN_PLATE_PARTS = {"reader_unavailable": "the plate reader", "camera_unavailable": "the camera"}
"""A crossing's plate ``match`` that means a part of the lane was down, and the part's name."""
DEMO_ROI = (144, 240, 352, 192)
"""Where the synthetic camera's plates appear (agent/dev/synthetic_camera.py): less to read per frame."""


def demo_records(
    plates: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> list[dict[str, object]]:
    """The demo cache as import records (the same shape a technician's NDJSON file has).

    ``plates`` maps a card reference to the (plate, jurisdiction) pairs registered to its
    holder; cards it does not name get a placeholder vehicle.
    """
    registered = plates or {}
    return [
        {
            "ref": ref,
            "document_type": DocumentType.TRUSTED_TRAVELLER_CARD.value,
            "program": program.value,
            "status": status.value,
            "valid_from": (_NOW - timedelta(days=365)).isoformat(),
            "valid_until": until.isoformat(),
            "holder_ref": f"H-DEMO-{index:04d}",
            "vehicles": [
                {"plate": plate, "jurisdiction": jurisdiction}
                for plate, jurisdiction in registered.get(ref, [(f"DEMO{index:03d}", "CA")])
            ],
        }
        for index, (ref, program, status, until) in enumerate(DEMO_CREDENTIALS, start=1)
    ]


def demo_config(
    workdir: Path,
    device: str,
    broker_port: int,
    *,
    camera: bool = False,
    llrp_port: int | None = None,
    models_dir: Path | None = None,
) -> AgentConfig:
    """A trusted-traveller lane with the default timing: the simulated reader's clock runs on
    scenario time, so the lane sees a scenario as written at any speed.

    The reader is the lane controller on ``device``, or with ``llrp_port`` an LLRP reader on
    that loopback port (loop 1 on GPI 1, the signal on GPO 1). With ``camera`` the lane reads
    plates from the synthetic camera (``DEMO_ROI`` is where its plates appear), with the models
    in ``models_dir`` (default: the ones shipped with the agent).
    """
    reader: LaneControllerReaderConfig | LlrpReaderConfig
    if llrp_port is None:
        reader = LaneControllerReaderConfig(
            device=device, ping_interval_s=0.5, silence_timeout_s=3.0
        )
    else:
        reader = LlrpReaderConfig(
            type="llrp",
            host="127.0.0.1",
            port=llrp_port,
            antennas=(1, 2),
            signal_gpo_port=1,
            keepalive_s=1.0,
            silence_timeout_s=3.0,
            reconnect_min_s=0.2,
            reconnect_max_s=2.0,
        )
    return AgentConfig(
        lane=LaneConfig(port_id="DEMO", lane_id="L01"),
        reader=reader,
        cache=CacheConfig(path=workdir / "credentials.db"),
        outbox=OutboxConfig(path=workdir / "outbox.db"),
        mqtt=MqttConfig(
            host="127.0.0.1", port=broker_port, reconnect_min_s=0.2, reconnect_max_s=2.0
        ),
        logging=LoggingConfig(level="WARNING", format="text"),
        camera=CameraConfig(enabled=camera, source="synthetic", roi=DEMO_ROI),
        vision=VisionConfig(max_fps=8.0, models_dir=models_dir),
        # Any free port: a lane agent on this machine may hold the default one.
        page=PageConfig(port=0),
    )


def registered_plates(scenario: Scenario) -> dict[str, list[tuple[str, str]]]:
    """Register each vehicle's plate to the holders of its cards, except every fourth vehicle's,
    so the demo shows plates that match and plates registered to nobody in the car."""
    plates: dict[str, list[tuple[str, str]]] = {}
    for index, vehicle in enumerate(scenario.vehicles):
        if index % 4 == 3 or vehicle.plate is None:
            continue
        for card in vehicle.cards:
            # The cache keeps ISO 3166-2 codes as they are: "MX-BCN" stays "MX-BCN".
            entry = (vehicle.plate, vehicle.jurisdiction or "CA")
            if entry not in plates.setdefault(card.epc, []):
                plates[card.epc].append(entry)
    return plates


def run_demo(
    *,
    vehicles: int,
    speed: float,
    seed: int | None,
    workdir: Path | None,
    out: TextIO,
    reader: str = "lane_controller",
    models_dir: Path | None = None,
) -> int:
    """Run the demo; return 0 once every vehicle's crossing was received (or stored) with no
    broken part (:func:`broken_parts`), 1 otherwise."""
    with _workdir(workdir) as directory:
        scenario = generate_scenario(
            vehicles, _KNOWN_REFS, seed if seed is not None else random.randrange(1 << 30)
        )
        with CredentialCache.open(directory / "credentials.db") as cache:
            cache.import_records(demo_records(registered_plates(scenario)), source="demo")
        broker: PrivateMosquitto | None = None
        try:
            broker = PrivateMosquitto(directory)
            broker.start()
        except BrokerUnavailableError as exc:
            broker = None
            print(f"no broker: {exc}", file=out)
        try:
            return _run(scenario, directory, broker, speed, out, reader, models_dir)
        finally:
            if broker is not None:
                broker.stop()


@contextmanager
def _workdir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    with tempfile.TemporaryDirectory(prefix="lane-agent-demo-") as name:
        yield Path(name)


def _run(
    scenario: Scenario,
    directory: Path,
    broker: PrivateMosquitto | None,
    speed: float,
    out: TextIO,
    reader: str,
    models_dir: Path | None,
) -> int:
    expected = len(scenario.vehicles)
    simulated_s = max((event.at_s for event in plan_scenario(scenario)), default=0.0)
    deadline = time.monotonic() + simulated_s / speed + 30.0
    port = broker.port if broker else free_loopback_port()
    simulator: ControllerSimulator | LlrpReaderEmulator
    if reader == "llrp":
        simulator = LlrpReaderEmulator(scenario, speed=speed)
        simulator.start()
        where = f"LLRP reader on {simulator.address}"
        config = demo_config(
            directory, "-", port, camera=True, llrp_port=simulator.port, models_dir=models_dir
        )
    else:
        simulator = ControllerSimulator(scenario, speed=speed)
        simulator.start()
        where = f"controller on {simulator.device_path}"
        config = demo_config(
            directory, simulator.device_path, port, camera=True, models_dir=models_dir
        )
    from agent.dev.synthetic_camera import (  # OpenCV: only when used
        ScenarioCamera,
        vehicle_at_booth,
    )

    camera = ScenarioCamera(
        scenario,
        lambda: vehicle_at_booth(simulator.sent_events(), config.lane.correlation.presence_loop_id),
    )
    received: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    subscriber = _subscribe(broker, config, received) if broker else None
    service = LaneService(config, camera_source=camera)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,), name="lane-service", daemon=True)
    print(
        f"lane-agent demo: lane DEMO/L01 (trusted_traveller), {expected} vehicles, "
        f"{where}, " + (f"broker 127.0.0.1:{broker.port}" if broker else "no broker"),
        file=out,
        flush=True,
    )
    worker.start()
    if service.ready.wait(10) and service.page is not None and service.page.server is not None:
        print(f"lane page: {service.page.server.url}", file=out, flush=True)
    try:
        if broker is None:
            crossings = _show_outbox(service, config, expected, deadline, out)
        else:
            crossings = _show_received(received, expected, deadline, out)
    finally:
        stop.set()
        worker.join(timeout=15)
        simulator.stop()
        if subscriber is not None:
            subscriber.loop_stop()
            subscriber.disconnect()
    if crossings is None:
        return 1
    problems = broken_parts(crossings)
    for problem in problems:
        print(f"demo failed: {problem} (the agent's log on stderr says why)", file=out)
    return 1 if problems else 0


def broken_parts(crossings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The parts of the lane that were down while the demo ran, as the crossings record them:
    one line per part, empty when every part worked. A plate that was simply not read is not a
    broken part; a plate reader or camera that was unavailable is."""
    problems = []
    for match, part in BROKEN_PLATE_PARTS.items():
        hit = sum(1 for event in crossings if (event.get("plate") or {}).get("match") == match)
        if hit:
            problems.append(f"{part} was unavailable for {hit} of {len(crossings)} crossings")
    return problems


def _subscribe(
    broker: PrivateMosquitto,
    config: AgentConfig,
    received: queue.Queue[tuple[str, dict[str, Any]]],
) -> mqtt.Client:
    """Central ops' view: a subscriber to every lane's crossings and live crossings."""
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="demo-central-ops", protocol=mqtt.MQTTv5
    )

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        prefix = config.mqtt.topic_prefix
        c.subscribe([(all_crossings_filter(prefix), 1), (all_live_filter(prefix), 1)])

    def on_subscribe(*_args: object) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        kind = message.topic.rsplit("/", 1)[-1]
        received.put_nowait((kind, json.loads(message.payload)))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not subscribed.wait(10):
        raise BrokerUnavailableError("demo subscriber could not subscribe")
    return client


def _show_received(
    received: queue.Queue[tuple[str, dict[str, Any]]], expected: int, deadline: float, out: TextIO
) -> list[dict[str, Any]] | None:
    """Print live events as the booth sees them and each crossing as central receives it;
    return the crossings, or None when they did not all arrive in time."""
    seen: set[str] = set()
    crossings: list[dict[str, Any]] = []
    finals: set[str] = set()  # crossing ids of the final crossings received
    shown_live: set[str] = set()  # crossings the booth was shown before their final crossing
    live_revisions: set[tuple[str, int]] = set()
    while len(seen) < expected:
        try:
            kind, event = received.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            print(f"demo failed: timed out, {len(seen)} of {expected} crossings received", file=out)
            return None
        if kind == "live":
            key = (event["crossing_id"], event["revision"])
            if key not in live_revisions and event["phase"] != "closed":
                live_revisions.add(key)
                if event["crossing_id"] not in finals:
                    shown_live.add(event["crossing_id"])
                print(format_live(event), file=out, flush=True)
            continue
        if event["event_id"] in seen:
            continue  # central de-duplicates on event_id; so does the demo
        seen.add(event["event_id"])
        crossings.append(event)
        finals.add(event["crossing_id"])
        print(format_crossing(event), file=out, flush=True)
    print(f"{expected} crossings received by central operations.", file=out)
    print(
        f"{len(finals & shown_live)} of them shown at the booth while the vehicle was there.",
        file=out,
    )
    return crossings


def _show_outbox(
    service: LaneService, config: AgentConfig, expected: int, deadline: float, out: TextIO
) -> list[dict[str, Any]] | None:
    """Print the crossings the outbox holds for the uplink; None when they are not all there."""
    while service.counters.crossings < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    if service.counters.crossings < expected:
        print(
            f"demo failed: timed out, {service.counters.crossings} of {expected} crossings",
            file=out,
        )
        return None
    with Outbox(config.outbox.path) as outbox:
        rows = outbox.pending(expected)
    crossings = [json.loads(row.payload) for row in rows]
    for event in crossings:
        print(format_crossing(event), file=out)
    print(
        f"{len(rows)} crossings waiting in the outbox for the uplink; to see them delivered, "
        f"{INSTALL_HINT}",
        file=out,
    )
    return crossings


def format_live(event: dict[str, Any]) -> str:
    """One line per live update: what the booth is shown while the vehicle is there."""
    at = event["as_of"][11:19]
    cards = (
        ", ".join(f"…{card['ref'][-4:]} {card['association']}" for card in event["cards"])
        or "no card yet"
    )
    plate = event.get("plate")
    text = f"plate {plate['text'] or '-'}  " if plate is not None else ""
    return (
        f"     {at}  at booth  {event['recommendation']:<8}  {text}{cards}  "
        f"({', '.join(event['changes'])})"
    )


def format_crossing(event: dict[str, Any]) -> str:
    """One readable line per vehicle; card numbers shortened to their last four digits."""
    closed = event["closed_at"][11:19]
    cards = (
        ", ".join(
            f"…{card['ref'][-4:]} {card['result']}"
            + (f" ({card['program']})" if card["program"] else "")
            for card in event["cards"]
        )
        or "no card"
    )
    reasons = ",".join(event["reasons"]) or "-"
    plate = event.get("plate")
    seen = ""
    if plate is not None:
        text = plate["text"] or "-"
        confidence = f" {plate['confidence']:.2f}" if plate["confidence"] is not None else ""
        seen = f"plate {text}{confidence} {plate['match']}  "
    return (
        f"#{event['seq']:<3} {closed}  {event['recommendation']:<8}  {seen}{cards}  "
        f"[reasons: {reasons}; {event['closed_by']}]"
    )

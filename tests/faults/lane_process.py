"""The lane agent's delivery side as a separate process, for the fault-injection suite.

It runs exactly what the service runs after the lane engine — ``Delivery.open`` from config: the
outbox (replacing a damaged one), the fail-safe committer, the MQTT uplink and the status board —
fed by a steady stream of vehicles instead of the serial link, so tests can kill it with SIGKILL,
limit its file size, or cut its network at any moment.

stdout carries one line per fact the test needs, flushed at once::

    stored <seq> <event_id>     a crossing whose commit returned (it is durable from here on)
    held <event_id>             a crossing the outbox could not take (kept in memory, retried)
    signal <STATE>              what the lane controller was told to show
    uplink <state>              uplink state changes
    committed <count>           all ``--vehicles`` crossings were handed to the committer

Logs (JSON lines) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from agent.config import AgentConfig, LaneConfig, LoggingConfig, MqttConfig, OutboxConfig
from agent.delivery import Delivery
from agent.logs import configure_logging
from agent.uplink.publisher import UplinkState
from agent.wire.crossing_event import uuid7
from agent.wire.topics import Topics
from firmware_bridge.codec import SignalState

PORT_ID = "port-7"
LANE_ID = "lane-3"
TOPICS = Topics("lane-agent/v1", PORT_ID, LANE_ID)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class PrintedSignal:
    """Stands in for the lane controller link: prints what the lane signal is asked to show."""

    def set_signal(self, state: SignalState) -> None:
        say(f"signal {state.name}")


def payload_for(event_id: str) -> Callable[[int], bytes]:
    def build(seq: int) -> bytes:
        return json.dumps({"seq": seq, "event_id": event_id}).encode()

    return build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--vehicles", type=int, default=0, help="0: none, just drain")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="mean gap between vehicles")
    parser.add_argument("--keepalive", type=int, default=30)
    parser.add_argument("--max-bytes", type=int, default=1 << 30)
    parser.add_argument("--status-interval", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    configure_logging("INFO", "json")
    config = AgentConfig(
        lane=LaneConfig(port_id=PORT_ID, lane_id=LANE_ID),
        outbox=OutboxConfig(path=options.workdir / "outbox.db", max_bytes=options.max_bytes),
        mqtt=MqttConfig(
            host="127.0.0.1",
            port=options.port,
            keepalive_s=options.keepalive,
            reconnect_min_s=0.1,
            reconnect_max_s=1.0,
            status_interval_s=options.status_interval,
        ),
        logging=LoggingConfig(level="INFO", format="json"),
    )

    def on_state_change(state: UplinkState) -> None:
        say(f"uplink {state.value}")

    delivery = Delivery.open(
        config,
        TOPICS,
        {"port_id": PORT_ID, "lane_id": LANE_ID},
        on_state_change=on_state_change,
    )
    delivery.attach_signal(PrintedSignal())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    delivery.uplink.start()
    rng = random.Random(options.seed)
    committed = 0
    while not stop.is_set():
        if committed < options.vehicles:
            event_id = str(uuid7())
            row = delivery.commit(payload_for(event_id))
            say(f"stored {row.seq} {event_id}" if row is not None else f"held {event_id}")
            committed += 1
            if committed == options.vehicles:
                say(f"committed {committed}")
            gap_s = rng.expovariate(1000.0 / options.interval_ms)
        else:
            gap_s = 0.05
        delivery.tick()
        stop.wait(gap_s)
    delivery.close(flush_s=5.0)


if __name__ == "__main__":
    main()

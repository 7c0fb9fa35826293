"""Many simulated lanes in one process, for bench/bench_central.py: a faithful light publisher.

Each lane keeps the delivery contract the agent keeps (docs/delivery.md), minus SQLite: a lane
*commits* a crossing (a valid ``lane-agent/crossing-event/1`` document with the next seq and a
UUIDv7 event id) into an in-memory outbox, publishes outbox rows at QoS 1 in seq order with at
most ``window`` awaiting PUBACK (the agent's max_inflight), holds every row until the retained
watermark on its ``…/ack`` topic covers it, ignores a lower watermark, and after every reconnect
(persistent session, jittered back-off) publishes every row above the watermark again. The time
from a row's commit to the watermark that covers it is the figure the benchmark reports.

One thread drives every lane's paho client through a selector (paho's external-loop API), so 250
lanes cost one thread, not 250. Run by bench_central.py as
``python -m bench.central_lanes CONFIG.json``; writes its results as JSON next to the config.
"""

from __future__ import annotations

import json
import random
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.wire.crossing_event import iso, uuid7
from agent.wire.topics import Topics
from tests.central.events import crossing_event


@dataclass
class Lane:
    index: int
    topics: Topics
    client: mqtt.Client
    template: dict[str, Any]
    next_seq: int = 1
    outbox: dict[int, tuple[bytes, float]] = field(
        default_factory=dict
    )  # seq -> (payload, committed)
    unsent: list[int] = field(default_factory=list)
    in_flight: int = 0
    watermark: int = 0
    connected: bool = False
    registered: Any = None
    reconnect_at: float = 0.0
    attempts: int = 0
    next_commit_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    reconnects: int = 0

    def commit(self, now: float) -> None:
        seq = self.next_seq
        self.next_seq += 1
        event = dict(self.template)
        event["seq"] = seq
        event["event_id"] = str(uuid7())
        stamp = iso(time.time())
        event["closed_at"] = event["committed_at"] = stamp
        payload = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        self.outbox[seq] = (payload, now)
        self.unsent.append(seq)


def run(config: dict[str, Any]) -> dict[str, Any]:
    stop = {"now": False, "reconnect": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    # SIGUSR1: every lane still holding rows drops its connection, as at its next network blip or
    # restart, and (like the agent) publishes every row above its watermark again on reconnect.
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(reconnect=True))
    rng = random.Random(config["seed"])
    selector = selectors.DefaultSelector()
    lanes: list[Lane] = []
    port = config["broker_port"]
    for index in range(config["first_lane"], config["first_lane"] + config["lanes"]):
        lane_id = f"L{index:04d}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"lane-{config['port_id']}-{lane_id}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.max_inflight_messages_set(config["window"])
        client.max_queued_messages_set(0)
        template = crossing_event(config["port_id"], lane_id, 1, rng=rng)
        lane = Lane(index, Topics("lane-agent/v1", config["port_id"], lane_id), client, template)
        client.user_data_set(lane)
        client.on_connect = _on_connect
        client.on_disconnect = _on_disconnect
        client.on_publish = _on_publish
        client.on_message = _on_message
        lanes.append(lane)
    rate = config["rate_per_lane"]  # events per second per lane; 0: as fast as the window allows
    backlog = config.get("events_per_lane")  # with rate 0: commit this many, then only wait
    marker = Path(config["published_marker"]) if config.get("published_marker") else None
    started = time.monotonic()
    for lane in lanes:
        lane.next_commit_at = started + (rng.random() / rate if rate else 0.0)
        _connect(lane, port, selector, rng, started)
    publish_until = started + config["duration_s"]
    drain_until = publish_until + config["drain_s"]
    next_misc = started
    committed = 0
    while not stop["now"]:
        now = time.monotonic()
        if now >= drain_until:
            break
        if stop["reconnect"]:
            stop["reconnect"] = False
            for lane in lanes:
                if lane.outbox and lane.connected:
                    lane.client.disconnect()
                    lane.connected = False
                    lane.reconnects += 1
                    lane.reconnect_at = now + rng.uniform(0.05, 0.5)
        publishing = now < publish_until
        if backlog is not None and all(lane.next_seq > backlog for lane in lanes):
            publishing = False  # the backlog is committed: wait for its confirmation only
        if not publishing and all(not lane.outbox for lane in lanes):
            break
        for lane in lanes:
            if not lane.connected:
                if now >= lane.reconnect_at:
                    _connect(lane, port, selector, rng, now)
                continue
            if publishing:
                if rate:
                    while lane.next_commit_at <= now:
                        lane.commit(lane.next_commit_at)
                        lane.next_commit_at += 1.0 / rate
                        committed += 1
                else:
                    while len(lane.unsent) + lane.in_flight < config["window"] and (
                        backlog is None or lane.next_seq <= backlog
                    ):
                        lane.commit(now)
                        committed += 1
            while lane.unsent and lane.in_flight < config["window"]:
                seq = lane.unsent.pop(0)
                row = lane.outbox.get(seq)
                if row is None:
                    continue
                lane.in_flight += 1
                lane.client.publish(lane.topics.crossing, row[0], qos=1)
            if lane.client.want_write():
                lane.client.loop_write()
        for key, _mask in selector.select(timeout=0.002):
            owner: Lane = key.data
            owner.client.loop_read()
            if owner.client.want_write():
                owner.client.loop_write()
        if now >= next_misc:
            for lane in lanes:
                if lane.connected:
                    lane.client.loop_misc()
            next_misc = now + 1.0
        if (
            marker is not None
            and backlog is not None
            and not marker.exists()
            and all(
                lane.next_seq > backlog and not lane.unsent and not lane.in_flight for lane in lanes
            )
        ):
            marker.write_text(str(committed))  # every event is with the broker
        for lane in lanes:
            if lane.registered is not None and not lane.connected and lane.client.socket() is None:
                selector.unregister(lane.registered)
                lane.registered = None
    latencies = [value for lane in lanes for value in lane.latencies]
    return {
        "committed": committed,
        "confirmed": len(latencies),
        "unconfirmed": sum(len(lane.outbox) for lane in lanes),
        "last_seq": {lane.topics.lane_id: lane.next_seq - 1 for lane in lanes},
        "latencies": latencies,
        "reconnects": sum(lane.reconnects for lane in lanes),
        "elapsed_s": time.monotonic() - started,
    }


def _connect(
    lane: Lane, port: int, selector: selectors.BaseSelector, rng: random.Random, now: float
) -> None:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    try:
        if lane.attempts == 0 and lane.reconnects == 0:
            lane.client.connect(
                "127.0.0.1", port, keepalive=30, clean_start=False, properties=properties
            )
        else:
            lane.client.reconnect()
    except OSError:
        lane.attempts += 1
        lane.reconnect_at = now + rng.uniform(0, min(2.0, 0.1 * 2**lane.attempts))  # full jitter
        return
    if lane.registered is not None:
        selector.unregister(lane.registered)
    lane.registered = lane.client.socket()
    selector.register(lane.registered, selectors.EVENT_READ, lane)


def _on_connect(client: mqtt.Client, lane: Lane, flags: Any, reason: Any, _properties: Any) -> None:
    if reason.is_failure:
        return
    lane.connected = True
    lane.attempts = 0
    client.subscribe(lane.topics.ack, qos=1)
    # Everything above the watermark goes out again: the broker may have lost what it had.
    lane.unsent = sorted(lane.outbox)
    lane.in_flight = 0


def _on_disconnect(_client: mqtt.Client, lane: Lane, *_args: Any) -> None:
    if lane.connected:
        lane.reconnects += 1
    lane.connected = False
    lane.reconnect_at = time.monotonic() + random.uniform(0.05, 1.0)


def _on_publish(_client: mqtt.Client, lane: Lane, *_args: Any) -> None:
    lane.in_flight = max(0, lane.in_flight - 1)


def _on_message(_client: mqtt.Client, lane: Lane, message: mqtt.MQTTMessage) -> None:
    try:
        seq = int(json.loads(message.payload)["acked_seq"]["crossing"])
    except (ValueError, KeyError, TypeError):
        return
    if seq <= lane.watermark:
        return  # a lower watermark is ignored
    now = time.monotonic()
    for confirmed in range(lane.watermark + 1, seq + 1):
        row = lane.outbox.pop(confirmed, None)
        if row is not None:
            lane.latencies.append(now - row[1])
    lane.watermark = seq


if __name__ == "__main__":
    config_path = Path(sys.argv[1])
    result = run(json.loads(config_path.read_text()))
    config_path.with_suffix(".result.json").write_text(json.dumps(result))

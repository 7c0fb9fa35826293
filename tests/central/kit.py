"""Central's test kit: a lane that publishes like one, and ingest workers in a thread or a process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from central.ingest import IngestSettings, IngestWorker
from central.mqtt import BrokerSettings
from tests.central.events import crossing_event, encode, topics
from tests.support.broker import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]


def settings(dsn: str, mosquitto: MosquittoBroker, **overrides: Any) -> IngestSettings:
    """Worker settings for tests: short batches and watermark intervals, fast reconnects."""
    base = IngestSettings(
        dsn=dsn,
        broker=BrokerSettings(mosquitto.host, mosquitto.port),
        batch_wait_s=0.01,
        ack_interval_s=0.05,
        ack_sweep_s=0.5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    return replace(base, **overrides)


@contextlib.contextmanager
def running_worker(worker_settings: IngestSettings) -> Iterator[IngestWorker]:
    """An ingest worker on a thread; stopped (cleanly, session kept) on exit."""
    worker = IngestWorker(worker_settings)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as error:  # surfaced in the test, not lost in the thread
            failure.append(error)

    thread = threading.Thread(target=run, name=f"ingest-{worker_settings.client_id}", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: worker.stats.subscriptions > 0 or bool(failure), 10, "the worker to subscribe"
        )
        if failure:
            raise failure[0]
        yield worker
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "ingest worker did not stop"
        if failure:
            raise failure[0]


def worker_process(
    dsn: str, broker: MosquittoBroker, client_id: str, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``lane-central ingest`` as a child process (for kill -9)."""
    command = [
        sys.executable, "-m", "central.cli", "ingest", "--dsn", dsn, "--host", broker.host,
        "--port", str(broker.port), "--client-id", client_id, "--batch-wait", "0.01",
        "--ack-interval", "0.05", "--log-format", "text", *extra,
    ]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_subscribed(log: Path, times: int = 1) -> None:
    """Until a worker process logged its SUBACK ``times`` times (messages before are not for it)."""
    wait_for(
        lambda: log.read_text().count("subscribed to the lanes") >= times,
        15,
        "the worker to subscribe",
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class Lane:
    """One simulated lane: publishes its crossings at QoS 1 and reads its retained watermark."""

    def __init__(self, broker: MosquittoBroker, port_id: str, lane_id: str) -> None:
        self.topics = topics(port_id, lane_id)
        self.port_id, self.lane_id = port_id, lane_id
        self.events: dict[int, bytes] = {}
        self.watermarks: list[int] = []
        self._condition = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"lane-{port_id}-{lane_id}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.max_queued_messages_set(0)
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_args: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        self._client.subscribe(self.topics.ack, qos=1)
        if not subscribed.wait(5):
            pytest.fail(f"lane {port_id}/{lane_id} could not subscribe to its ack topic")

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        seq = json.loads(message.payload)["acked_seq"]["crossing"]
        with self._condition:
            self.watermarks.append(seq)
            self._condition.notify_all()

    def event(self, seq: int, **options: Any) -> bytes:
        """The lane's event ``seq`` (built once: a re-send is byte for byte the same)."""
        if seq not in self.events:
            self.events[seq] = encode(crossing_event(self.port_id, self.lane_id, seq, **options))
        return self.events[seq]

    def publish(self, *seqs: int) -> None:
        for seq in seqs:
            self.publish_raw(self.topics.crossing, self.event(seq))

    def publish_raw(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        assert info.is_published()

    def wait_watermark(self, seq: int, timeout_s: float = 10) -> None:
        with self._condition:
            if not self._condition.wait_for(
                lambda: seq in self.watermarks or max(self.watermarks, default=0) > seq, timeout_s
            ):
                pytest.fail(
                    f"lane {self.port_id}/{self.lane_id}: no watermark {seq} within {timeout_s} s (got {self.watermarks})"
                )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def count(dsn: str, query: str, *params: object) -> Any:
    with psycopg.connect(dsn) as connection:
        row = connection.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]

"""Real MQTT infrastructure for tests: a Mosquitto broker and a subscriber that collects messages.

The broker listens on 127.0.0.1 and a free port (never 1883, which a system broker may hold), keeps
persistence in its work directory and queues without limit so a slow test subscriber never loses
messages. A missing ``mosquitto`` binary fails the test with the install hint: never a skip.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.dev import broker as devbroker

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def find_mosquitto() -> str:
    """Path of the mosquitto binary; fails the calling test (never skips) when it is missing."""
    found = devbroker.find_mosquitto()
    if found is None:
        pytest.fail(
            "mosquitto not found on PATH or in /usr/sbin: install it with "
            "`sudo apt-get install mosquitto` (the tests need a real MQTT v5 broker)",
            pytrace=False,
        )
    return found


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    return devbroker.free_loopback_port()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until true, failing with ``what`` after ``timeout_s``.

    Only for state that offers no event or condition to wait on.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


class MosquittoBroker:
    """One Mosquitto process with its config, persistence and log under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        render_config: Callable[[int, Path], str] | None = None,
    ) -> None:
        """``render_config(port, workdir)``, when given, writes the whole config instead."""
        self.binary = find_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.extra_config = extra_config
        self.render_config = render_config
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        if self.render_config is not None:
            self.config_path.write_text(self.render_config(self.port, self.workdir))
            return
        self.config_path.write_text(
            "\n".join(
                [
                    f"listener {self.port} {LOOPBACK}",
                    "allow_anonymous true",
                    "max_queued_messages 0",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    f"log_dest file {self.log_path}",
                    "log_type all",
                    # Only used when started as root: stay root, keep the work directory writable.
                    f"user {getpass.getuser()}",
                    self.extra_config,
                    "",
                ]
            )
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once its port accepts connections."""
        if self.running:
            raise RuntimeError(f"mosquitto on port {self.port} is already running")
        for attempt in itertools.count(1):
            self._write_config()
            with (self.workdir / "mosquitto.out").open("ab") as output:
                self._process = subprocess.Popen(
                    [self.binary, "-c", str(self.config_path)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_accepting():
                return
            # A port picked by free_port() can be taken by someone else before mosquitto binds it.
            if self._fixed_port or attempt >= 3:
                pytest.fail(f"mosquitto did not start on port {self.port}:\n{self.log_text()}")
            self.port = free_port()
        raise AssertionError("unreachable")

    def _wait_accepting(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return True
            time.sleep(0.01)
        self.kill()
        return False

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that saves persistence."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what a power cut or OOM kill looks like to the clients."""
        self._end(signal.SIGKILL)

    def _end(self, signal_number: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal_number)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop cleanly, start again on the same port, re-reading the config (and any ACL file)."""
        self.stop()
        self._fixed_port = True
        self.start()

    def log_text(self) -> str:
        parts = []
        for path in (self.workdir / "mosquitto.out", self.log_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Message:
    """A message as a subscriber received it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """An MQTT v5 client that subscribes to one filter at QoS 1 and collects what arrives.

    It keeps a persistent session (clean_start=False) and reconnects on its own, so messages
    published while a broker restarts are still delivered to it afterwards.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        *,
        username: str | None = None,
        client_id: str | None = None,
        timeout_s: float = 5.0,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls`` is (CA file, certificate, key) for a broker that wants mutual TLS."""
        self.topic_filter = topic_filter
        self.client_id = client_id or f"test-subscriber-{uuid.uuid4().hex[:8]}"
        self._barrier_topic = f"lane-agent-tests/barrier/{self.client_id}"
        self._messages: list[Message] = []
        self._barriers: set[bytes] = set()
        self._condition = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username)
        if tls is not None:
            ca_file, cert_file, key_file = tls
            self._client.tls_set(str(ca_file), str(cert_file), str(key_file))
        self._client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 300
        self._client.connect(host, port, keepalive=10, clean_start=False, properties=properties)
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            pytest.fail(f"subscriber could not connect to {host}:{port}")
        if not self._subscribed.wait(timeout_s):
            self.close()
            pytest.fail(f"subscriber got no SUBACK for {topic_filter}")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            return
        # Test helper only: production code never calls the client from inside a callback.
        if not flags.session_present:
            client.subscribe([(self.topic_filter, 1), (self._barrier_topic, 1)])
        else:
            self._subscribed.set()
        self._connected.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # The barrier topic (second) may be refused by a broker with an ACL; the filter may not.
        if reason_codes and not reason_codes[0].is_failure:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._condition:
            if message.topic == self._barrier_topic:
                self._barriers.add(bytes(message.payload))
            else:
                self._messages.append(
                    Message(
                        message.topic, bytes(message.payload), message.qos, bool(message.retain)
                    )
                )
            self._condition.notify_all()

    @property
    def messages(self) -> list[Message]:
        """Everything received so far, in arrival order."""
        with self._condition:
            return list(self._messages)

    def wait_until(
        self, predicate: Callable[[list[Message]], bool], timeout_s: float, what: str
    ) -> list[Message]:
        """Wait until ``predicate(messages)`` holds and return the messages; fail on timeout."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self._messages), timeout_s):
                pytest.fail(
                    f"timed out after {timeout_s} s waiting for {what} on {self.topic_filter}; "
                    f"got {len(self._messages)}: {self._messages[-10:]!r}"
                )
            return list(self._messages)

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Message]:
        """Wait until at least ``count`` messages arrived; returns all received so far."""
        return self.wait_until(
            lambda messages: len(messages) >= count, timeout_s, f"{count} messages"
        )

    def barrier(self, timeout_s: float = 5.0) -> list[Message]:
        """Messages received before a marker published now came back.

        Mosquitto forwards in the order it accepted, so anything a publisher had acknowledged before
        this call is in the returned list: use it to assert that nothing more than expected arrived.
        """
        marker = uuid.uuid4().bytes
        self._client.publish(self._barrier_topic, marker, qos=1)
        with self._condition:
            if not self._condition.wait_for(lambda: marker in self._barriers, timeout_s):
                pytest.fail(f"barrier message did not come back within {timeout_s} s")
            return list(self._messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""A reader that keeps sending what the client cannot decode is one WARNING and a count, not a
line per message; the client's counter still counts every message."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from llrp.client import LlrpClient

MESSAGES = 500
UNKNOWN_TYPE = 333  # no LLRP message has this type: UnknownMessageTypeError on decode


def unknown_message(message_id: int) -> bytes:
    """A well-framed LLRP 1.1 message (10-byte header, no body) of a type nobody defines."""
    return struct.pack(">HII", (2 << 10) | UNKNOWN_TYPE, 10, message_id)


def serve_once(server: socket.socket, payload: bytes, done: threading.Event) -> None:
    connection, _ = server.accept()
    with connection:
        connection.sendall(payload)
        done.wait(10.0)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("interval_s", [60.0, 0.0])
def test_a_flood_of_undecodable_messages_is_warned_about_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, interval_s: float
) -> None:
    """At the default interval 500 messages give one WARNING (the rest at DEBUG); with no
    interval every message is warned about, so the limit is what bounds the first case."""
    monkeypatch.setattr("llrp.client.REPEAT_WARNING_INTERVAL_S", interval_s)
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as server:
        payload = b"".join(unknown_message(n) for n in range(1, MESSAGES + 1))
        thread = threading.Thread(target=serve_once, args=(server, payload, done), daemon=True)
        thread.start()
        client = LlrpClient("127.0.0.1", server.getsockname()[1])
        with caplog.at_level(logging.DEBUG, logger="llrp.client"):
            client.connect(wait_for_reader=False)
            try:
                assert wait_until(lambda: client.stats().undecodable == MESSAGES)
            finally:
                done.set()
                client.close()
        thread.join(5.0)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "undecodable" in r.getMessage()
    ]
    debug = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "undecodable" in r.getMessage()
    ]
    if interval_s:
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("llrp client: undecodable message from 127.0.0.1: ")
        assert len(debug) == MESSAGES - 1
    else:
        assert len(warnings) == MESSAGES
        assert not debug

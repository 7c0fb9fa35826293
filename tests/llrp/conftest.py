"""Fixtures for the LLRP tests: a real emulated reader on a loopback port and a real client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llrp.client import LlrpClient
from llrp.emulator import LlrpReaderEmulator
from tests.llrp.support import WAIT_S, Inbox


@pytest.fixture
def emulator() -> Iterator[LlrpReaderEmulator]:
    """An idle emulated reader (no scenario), running."""
    reader = LlrpReaderEmulator()
    reader.start()
    try:
        yield reader
    finally:
        reader.stop()


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def client(emulator: LlrpReaderEmulator, inbox: Inbox) -> Iterator[LlrpClient]:
    """A client connected to ``emulator``, its asynchronous messages going to ``inbox``."""
    connection = LlrpClient("127.0.0.1", emulator.port, on_message=inbox)
    connection.connect(WAIT_S)
    try:
        yield connection
    finally:
        connection.abort()

"""Decoding a snapshot's records in a second process while the install worker writes them.

A snapshot install does two kinds of work of about the same size: Python decoding and checking
every record line (gunzip, split, one regex match and one tuple per line, ~2.3 µs a record on the
development VM) and SQLite inserting the rows (~2.7 µs a record, the plain ``executemany``
baseline of ``bench/bench_cache.py``). In one process they add up; here the worker forks a
decoder that runs :func:`agent.cache.bundle.payload_lines` and
:func:`agent.cache.bundle.snapshot_chunks` on the payload and streams the rows back through a
pipe, so the two halves run on two cores. They slow each other down on a small VM (shared caches
and memory), so the gain measured at 15 M records was 8-18 %, not twice as fast (BENCHMARKS.md, "Credential
cache"). Threads
would not do: the decoding holds the GIL, and SQLite's GIL release around every row step makes
the two threads hand it over per row.

The rows cross the pipe as :mod:`marshal` frames of plain tuples (bytes, int, str, None): the
decoder is this same program forked from the worker, after the payload's signatures and digest
were checked, and marshal is the cheapest way to move such tuples (pickle cost 0.7 µs a record
to write and read back). A refusal in the decoder (a malformed payload, an invalid
or out-of-order record) comes back as the same :class:`BundleRefusedError`, reason and detail;
a decoder that dies without a result is an :class:`DecoderError`, and the install fails with the
cache as it was, like any other failed install.

The fork happens only in a single-threaded process (the install worker is one): forking a process
with other threads can leave a lock held forever in the child. Anywhere else the records are
decoded in-process, with the same results.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import marshal
import os
import signal
import struct
import threading
from collections.abc import Generator, Iterator
from typing import IO, BinaryIO

from agent.cache.bundle import (
    BundleRefusedError,
    Manifest,
    RefusalReason,
    payload_lines,
    snapshot_chunks,
)
from agent.cache.parent_death import die_with_parent
from agent.cache.records import StorageRow
from agent.cache.store import CacheError

ROWS_PER_FRAME = 1024
"""Rows per frame: ~65 KB of marshal data, one ``executemany`` on the writing side."""
PIPE_BUFFER_BYTES = 1 << 20
"""The pipe's kernel buffer (Linux's default is 64 KiB, the most an unprivileged process may ask
for is ``/proc/sys/fs/pipe-max-size``, 1 MiB by default): room for the decoder to run ~16 frames
ahead while the worker inserts one. With the default buffer the decoder blocked after one frame
and the two processes took turns (2 M records: 12.0 s, the same as decoding in-process)."""

logger = logging.getLogger(__name__)

_FRAME = struct.Struct(">cI")
_ROWS, _DONE, _REFUSED, _FAILED = b"R", b"D", b"X", b"E"


class DecoderError(CacheError):
    """The decoder process ended without a result; nothing of the snapshot was kept."""


def snapshot_rows_decoded(stream: IO[bytes], manifest: Manifest) -> Generator[list[StorageRow]]:
    """The snapshot's rows in lists, decoded by a forked child when this process may fork.

    Raises BundleRefusedError exactly as decoding in-process would, and DecoderError when the
    child dies without a result. Closing the iterator early (the writer failed) kills the child.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        yield from _decoded_here(stream, manifest)
        return
    yield from _decoded_by_child(stream, manifest)


def _decoded_here(stream: IO[bytes], manifest: Manifest) -> Iterator[list[StorageRow]]:
    return snapshot_chunks(payload_lines(stream, manifest), ROWS_PER_FRAME)


def _decoded_by_child(stream: IO[bytes], manifest: Manifest) -> Generator[list[StorageRow]]:
    parent_pid = os.getpid()
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BUFFER_BYTES)
    try:
        pid = os.fork()
    except OSError as err:  # out of processes or memory: nothing read yet, decode here instead
        os.close(read_end)
        os.close(write_end)
        logger.warning("cannot fork a snapshot decoder (%s); decoding in the install worker", err)
        yield from _decoded_here(stream, manifest)
        return
    if pid == 0:  # the decoder: never returns into the caller's code, whatever happens
        try:
            os.close(read_end)
            _run_decoder(write_end, stream, manifest, parent_pid)
        finally:
            os._exit(1)
    os.close(write_end)
    finished = False
    try:
        with os.fdopen(read_end, "rb", buffering=PIPE_BUFFER_BYTES) as frames:
            while True:
                kind, body = _read_frame(frames)
                if kind == _ROWS:
                    # From this program's own forked child over a private pipe, never from outside.
                    yield marshal.loads(body)  # noqa: S302
                elif kind == _DONE:
                    finished = True
                    return
                elif kind == _REFUSED:
                    reason, _, detail = body.decode().partition("\t")
                    finished = True
                    raise BundleRefusedError(RefusalReason(reason), detail)
                else:
                    finished = True
                    raise DecoderError(f"snapshot decoder failed: {body.decode()}")
    finally:
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _read_frame(frames: BinaryIO) -> tuple[bytes, bytes]:
    head = frames.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise DecoderError("snapshot decoder process ended without a result")
    kind, length = _FRAME.unpack(head)
    body = frames.read(length)
    if len(body) < length:
        raise DecoderError("snapshot decoder process ended in the middle of a frame")
    return kind, body


def _run_decoder(write_end: int, stream: IO[bytes], manifest: Manifest, parent_pid: int) -> None:
    """The child's whole life: decode, send, exit (``os._exit``: no cleanup of the parent's state).

    Dies with the worker (``PR_SET_PDEATHSIG``): a killed worker must not leave a process behind
    holding a copy of its install lock.
    """
    status = 1
    try:
        die_with_parent(parent_pid)
        stream = _own_reader(stream)
        with os.fdopen(write_end, "wb", buffering=PIPE_BUFFER_BYTES) as out:
            try:
                for chunk in _decoded_here(stream, manifest):
                    _write_frame(out, _ROWS, marshal.dumps(chunk))
            except BundleRefusedError as err:
                _write_frame(out, _REFUSED, f"{err.reason.value}\t{err.detail}".encode())
            except Exception as err:  # everything reaches the worker as one error line
                _write_frame(out, _FAILED, f"{type(err).__name__}: {err}".encode())
            else:
                _write_frame(out, _DONE, b"")
        status = 0
    finally:
        os._exit(status)


def _own_reader(stream: IO[bytes]) -> IO[bytes]:
    """The same bytes through a file description of the child's own, when ``stream`` is a file.

    A forked child shares its parent's file offsets: reading the inherited object would move the
    offset under the parent's buffered reader. An in-memory stream is the child's own copy.
    """
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # io.BytesIO: no descriptor
        return stream
    position = stream.tell()
    try:
        reader = os.fdopen(os.open(f"/proc/self/fd/{fd}", os.O_RDONLY), "rb")
    except OSError:  # no /proc: the parent never reads the stream again, so sharing is safe
        return stream
    reader.seek(position)
    return reader


def _write_frame(out: BinaryIO, kind: bytes, body: bytes) -> None:
    out.write(_FRAME.pack(kind, len(body)))
    out.write(body)

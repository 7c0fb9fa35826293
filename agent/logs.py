"""Logging for journald and for people: JSON lines when not on a terminal, text when on one.

Under systemd, stderr is a stream into the journal (``JOURNAL_STREAM`` names it). Each line then
starts with its sd-daemon priority (``<4>`` for a warning), which journald strips and records as
the entry's ``PRIORITY``, so ``journalctl -p warning`` shows warnings and worse only.

Card numbers, plates and holder references are only ever passed to ``logger.debug``; at INFO
and above the agent logs counts, states and sequence numbers.

A warning that can fire per frame or per read goes through :class:`RateLimitedLog`: the first
one is logged, later ones with the same message at most once per interval, with how many were
left out, so a bad cable or a misbehaving reader cannot flood the journal. The counters on the
status topic keep the exact figures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Literal

LogFormat = Literal["auto", "json", "text", "journal"]

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JOURNAL_TEXT_FORMAT = "%(name)s: %(message)s"
"""No time and no level: the journal records both for every entry."""


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def syslog_priority(levelno: int) -> int:
    """The sd-daemon / syslog priority of a logging level: 2 critical … 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class PriorityPrefixFormatter(logging.Formatter):
    """Prefix every line of another formatter's output with ``<N>`` (sd-daemon(3)).

    journald reads one entry per line, so a traceback's lines each carry the prefix too.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = self.inner.format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


def stderr_is_journal(
    stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether ``stream`` (stderr) is the journal stream systemd named in ``JOURNAL_STREAM``.

    systemd sets ``JOURNAL_STREAM=DEV:INODE`` for a service whose output goes to the journal; a
    child whose stderr was redirected elsewhere inherits the variable, hence the comparison.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, colon, inode = value.partition(":")
    if not colon:
        return False
    try:
        status = os.fstat((sys.stderr if stream is None else stream).fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's buffer)
        return False


def make_formatter(fmt: LogFormat, stream: IO[str] | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` on ``stream`` (stderr): see :func:`configure_logging`."""
    stream = sys.stderr if stream is None else stream
    if fmt == "journal":
        return PriorityPrefixFormatter(logging.Formatter(_JOURNAL_TEXT_FORMAT))
    try:
        on_terminal = stream.isatty()
    except (ValueError, AttributeError):
        on_terminal = False
    use_json = fmt == "json" or (fmt == "auto" and not on_terminal)
    inner = JsonLineFormatter() if use_json else logging.Formatter(_TEXT_FORMAT)
    return PriorityPrefixFormatter(inner) if stderr_is_journal(stream) else inner


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Install one stderr handler on the root logger (idempotent).

    ``auto``: text on a terminal, JSON lines otherwise; ``json`` and ``text`` force one. When
    stderr is the journal, every line also starts with its priority. ``journal``: priority
    prefix and ``logger: message`` (the journal adds time and level), for a journal stream that
    cannot be detected (a wrapper that clears the environment, ``systemd-cat``).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt, sys.stderr))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class RateLimitedLog:
    """Log a repetitive message once, then at most once per ``interval_s``, with a count.

    Messages are told apart by their template (the format string before ``%`` arguments), so
    ``"frame %d dropped"`` for every frame is one message. The first occurrence is logged; later
    ones within the interval are counted, not logged; the first one after the interval is logged
    with ``(N more like this suppressed in the last S s)``. :meth:`flush` logs what is still
    counted (call it when the owner stops). Thread-safe; the arguments of a suppressed call are
    never formatted.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        # template -> (level, time last logged, suppressed since)
        self._seen: dict[str, tuple[int, float, int]] = {}

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless it is a repeat within the interval.

        Returns True when a line was written (or would be, at an enabled level).
        """
        now = self._clock()
        with self._lock:
            seen = self._seen.get(msg)
            if seen is not None and now - seen[1] < self.interval_s:
                self._seen[msg] = (level, seen[1], seen[2] + 1)
                return False
            suppressed = seen[2] if seen is not None else 0
            since = now - seen[1] if seen is not None else 0.0
            self._seen[msg] = (level, now, 0)
        if suppressed:
            self.logger.log(
                level,
                msg + " (%d more like this suppressed in the last %.0f s)",
                *args,
                suppressed,
                since,
            )
        else:
            self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, msg, *args)

    def suppressed(self, msg: str) -> int:
        """How many ``msg`` were left out since it was last logged."""
        with self._lock:
            seen = self._seen.get(msg)
            return seen[2] if seen is not None else 0

    def flush(self) -> None:
        """Log one summary line per message with repeats still counted, and reset the counts."""
        now = self._clock()
        with self._lock:
            pending = [(m, s) for m, s in self._seen.items() if s[2]]
            for msg, (level, _, _) in pending:
                self._seen[msg] = (level, now, 0)
        for msg, (level, since, count) in pending:
            self.logger.log(
                level,
                "%d more like this suppressed in the last %.0f s: %s",
                count,
                now - since,
                msg,
            )

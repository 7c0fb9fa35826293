"""Progress of a long credential import, shown the way its reader can see it.

A 15-million-record import takes minutes. On a terminal it draws a bar (share of the file read,
records, rate); otherwise (a script, a systemd unit, a CI log) it writes an INFO log line per
report, in the agent's log format (JSON lines, with journald priorities under the journal).
A short import finishes before the first report and shows nothing.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, TYPE_CHECKING

from agent.logs import make_formatter

if TYPE_CHECKING:
    from agent.cache.store import ImportProgress

_BAR_WIDTH = 30


class ImportProgressReporter:
    """Called by :meth:`CredentialCache.import_file` every ``progress_interval_s``."""

    def __init__(self, source: str, stream: IO[str] | None = None) -> None:
        self.source = source
        self.stream = sys.stderr if stream is None else stream
        try:
            self.on_terminal = self.stream.isatty()
        except (ValueError, AttributeError):
            self.on_terminal = False
        self._drawn = False
        self._logger: logging.Logger | None = None
        self.reports = 0

    def __call__(self, progress: ImportProgress) -> None:
        self.reports += 1
        rate = progress.records / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        share = progress.share
        if self.on_terminal:
            self._draw(progress.records, rate, progress.elapsed_s, share)
            return
        logger = self._log()
        if share is None:
            logger.info(
                "credential import from %s: %d records read, %.0f records/s, %.0f s elapsed",
                self.source,
                progress.records,
                rate,
                progress.elapsed_s,
            )
        else:
            logger.info(
                "credential import from %s: %d records read (%.0f%% of the file),"
                " %.0f records/s, %.0f s elapsed",
                self.source,
                progress.records,
                share * 100,
                rate,
                progress.elapsed_s,
            )

    def finish(self) -> None:
        """End the bar's line (nothing to do for log lines or when nothing was shown)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, records: int, rate: float, elapsed_s: float, share: float | None) -> None:
        minutes, seconds = divmod(int(elapsed_s), 60)
        figures = f"{records:,} records  {rate:,.0f}/s  {minutes}:{seconds:02d}"
        if share is None:
            line = f"importing {figures}"
        else:
            filled = int(share * _BAR_WIDTH)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            line = f"importing [{bar}] {share * 100:3.0f}%  {figures}"
        self.stream.write(f"\r{line}\x1b[K")  # back to the line start, clear what is left
        self.stream.flush()
        self._drawn = True

    def _log(self) -> logging.Logger:
        if self._logger is None:
            # A logger of its own with one handler on this stream: the CLI configures no
            # logging, and the lines must not reach handlers a caller (a test) installed.
            logger = logging.getLogger(__name__)
            logger.propagate = False
            logger.setLevel(logging.INFO)
            for old in list(logger.handlers):
                logger.removeHandler(old)
            handler = logging.StreamHandler(self.stream)
            handler.setFormatter(make_formatter("auto", self.stream))
            logger.addHandler(handler)
            self._logger = logger
        return self._logger

    def close(self) -> None:
        """Finish the bar and release the log handler."""
        self.finish()
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                self._logger.removeHandler(handler)
                handler.close()
            self._logger = None

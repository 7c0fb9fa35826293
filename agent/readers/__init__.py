"""Reader families behind one seam (:mod:`agent.readers.base`): where the lane's card reads and
loop edges come from.

* :mod:`agent.readers.lane_controller` — the project's lane controller on a serial line
  (``firmware_bridge/``);
* :mod:`agent.readers.llrp` — an off-the-shelf UHF reader speaking LLRP (``llrp/``), the loops on
  its GPI inputs, the lane signal on a GPO output.

Adding a family: a config section in :mod:`agent.config.readers` with its ``type``, a class with
the :class:`~agent.readers.base.LaneReader` methods that stamps its device's reports in lane time
through a :class:`~agent.readers.clock.ReaderClock` and hands them to the sink, and a branch in
:func:`open_reader`. docs/readers.md tells the whole story.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config.readers import LaneControllerConfig, LlrpReaderConfig, ReaderConfig
from agent.readers.base import InputDeferred, InputSink, LaneReader, LaneSignal, ReaderInput


def open_reader(
    config: ReaderConfig,
    sink: InputSink,
    *,
    resume: str | None = None,
    clock_state: Mapping[str, Any] | None = None,
) -> LaneReader:
    """The reader family ``config`` names, not started yet; ``resume`` and ``clock_state`` are
    what the input journal kept of the last input stored."""
    if isinstance(config, LlrpReaderConfig):
        from agent.readers.llrp import LlrpReader  # the LLRP codec only where one is used

        return LlrpReader(config, sink, resume=resume, clock_state=clock_state)
    assert isinstance(config, LaneControllerConfig)
    from agent.readers.lane_controller import LaneControllerReader

    return LaneControllerReader(config, sink, resume=resume, clock_state=clock_state)


__all__ = [
    "InputDeferred",
    "InputSink",
    "LaneReader",
    "LaneSignal",
    "ReaderInput",
    "open_reader",
]

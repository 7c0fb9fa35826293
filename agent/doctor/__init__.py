"""``lane-agent doctor``: checks a lane as a whole and says what is broken and how to fix it.

One module per area: :mod:`~agent.doctor.lane_config` (what ``run`` would refuse, shared with
``config check`` through :mod:`agent.config.files`), :mod:`~agent.doctor.reader`,
:mod:`~agent.doctor.camera`, :mod:`~agent.doctor.models`, :mod:`~agent.doctor.broker`,
:mod:`~agent.doctor.cache` and :mod:`~agent.doctor.host` (disk, clock, systemd). Each check is one
line, OK / WARN / FAIL / SKIP (:mod:`~agent.doctor.report`); a check that does not apply here is
SKIP with the reason, never FAIL. The doctor is a composition-level tool like the CLI: it may
use the adapters, read-only, and changes nothing on the lane.
"""

from agent.doctor.runner import DoctorResult, run_doctor

__all__ = ["DoctorResult", "run_doctor"]

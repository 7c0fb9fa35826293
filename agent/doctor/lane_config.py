"""The config check: what ``config check`` and ``run`` refuse, one line per problem."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig, ConfigError, ConfigProblem, load_config
from agent.config.files import ROOT_UID, check_files
from agent.doctor.report import Check, fail, ok, warn

NAME = "config"


def check_config(
    path: Path, *, trust_owner_uid: int | None = ROOT_UID
) -> tuple[AgentConfig | None, list[Check]]:
    """Load ``path`` and check the files it names. The config is None when it cannot be loaded
    (then nothing else that needs it can be checked)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, [_problem(p) for p in exc.problems]
    found = check_files(config, path, trust_owner_uid=trust_owner_uid)
    checks = [_problem(p, warning=p.warning) for p in found]
    if not any(not p.warning for p in found):
        lane = config.lane
        checks.insert(
            0,
            ok(
                NAME,
                f"{path}: lane {lane.port_id}/{lane.lane_id}, every file it names is usable",
            ),
        )
    return config, checks


def _problem(problem: ConfigProblem, *, warning: bool = False) -> Check:
    where = f"{problem.file}:{problem.line}" if problem.line else str(problem.file)
    if problem.key in ("(file)", "(syntax)"):
        fix = f"point --config (or LANE_AGENT_CONFIG) at the lane's TOML file; then {_recheck(problem.file)}"
    else:
        fix = f"correct {problem.key} at {where} as the message says; then {_recheck(problem.file)}"
    if warning:
        return warn(NAME, str(problem), fix)
    return fail(NAME, str(problem), fix)


def _recheck(path: Path) -> str:
    return f"`lane-agent config check {path}`"

"""Options every ``lane-agent`` command that reads the lane's config shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_CONFIG = Path("/etc/lane-agent/lane.toml")

# No existence, type or permission checks here: click would exit 2 on them, and systemd restarts a
# unit that exits 2. load_config reports them as config problems (exit 78).
CONFIG_PATH = click.Path(path_type=Path, readable=False)

F = TypeVar("F", bound=Callable[..., Any])


def config_option(help: str = "Lane config file (env LANE_AGENT_CONFIG).") -> Callable[[F], F]:
    """``--config FILE`` (default /etc/lane-agent/lane.toml, or $LANE_AGENT_CONFIG) as
    ``config_path``."""
    return click.option(
        "--config",
        "config_path",
        type=CONFIG_PATH,
        default=DEFAULT_CONFIG,
        show_default=True,
        envvar="LANE_AGENT_CONFIG",
        help=help,
    )

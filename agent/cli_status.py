"""``lane-agent status``: the running agent's status, read from its lane page (docs/page.md).

The agent serves its status document on ``/api/status``; this command reads it the way the
config says the page is served (address, TLS, credential) and prints one line per part of the
lane, or the document itself with ``--json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from agent.cli_options import config_option

EX_UNAVAILABLE = 69
EX_NOPERM = 77
EX_CONFIG = 78


@click.command()
@config_option()
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(config_path: Path, as_json: bool) -> None:
    """Show the running agent's status: reader, camera, uplink, outbox, cache, the vehicle at
    the booth and every fault.

    Exits 69 when the agent cannot be reached, 77 when its page refuses the credential and 78
    when the config cannot be used.
    """
    from agent.config import ConfigError, load_config
    from agent.page.auth import PageConfigError
    from agent.page.client import PageRefusedError, PageUnreachableError, fetch, summary

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(EX_CONFIG)
    if not config.page.enabled:
        click.echo(
            f"error: {config_path}: [page] enabled = false: the agent serves its status on the "
            "page; turn it on to use this command",
            err=True,
        )
        sys.exit(EX_UNAVAILABLE)
    try:
        document = fetch(config.page, "/api/status")
        crossing = None if as_json else fetch(config.page, "/api/crossing")
    except PageConfigError as exc:
        hint = "" if os.geteuid() == 0 else " (try sudo: the credential is the agent's)"
        click.echo(f"error: {exc}{hint}", err=True)
        sys.exit(EX_CONFIG)
    except PageRefusedError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_NOPERM)
    except PageUnreachableError as exc:
        click.echo(
            f"error: {exc}: is the agent running (systemctl status lane-agent) with this "
            "config's [page] on?",
            err=True,
        )
        sys.exit(EX_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    for line in summary(document, crossing):
        click.echo(line)

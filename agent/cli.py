"""The ``lane-agent`` command: thin — parse, call the library, map errors to exit codes.

Exit codes follow sysexits(3) so systemd and scripts can tell a bad config (78) from bad input
data (65) from a missing resource (69).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from agent import __version__
from agent.cli_options import CONFIG_PATH, config_option

if TYPE_CHECKING:
    from agent.config import AgentConfig

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78

_config_option = config_option()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lane-agent")
def main() -> None:
    """Inspection-lane agent: card reads and loop sensors in, one crossing event per vehicle out."""


# --- run ----------------------------------------------------------------------------------


@main.command()
@_config_option
def run(config_path: Path) -> None:
    """Run the lane agent (what systemd starts)."""
    from agent.config import ConfigError
    from agent.config.files import load_checked
    from agent.logs import configure_logging
    from agent.service import LaneService

    try:
        config, warnings = load_checked(config_path)
    except ConfigError as exc:
        _print_problems(exc)
        sys.exit(EX_CONFIG)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    configure_logging(config.logging.level, config.logging.format)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    from agent.cache import CacheError
    from agent.cache.trust import TrustError
    from agent.page.auth import PageConfigError

    try:
        code = LaneService(config).run(stop)
    except (TrustError, PageConfigError) as exc:
        # A trust file that is missing, unparsable or writable by others, or page credential or
        # TLS files that cannot be used, are config problems: systemd must not restart into
        # them (RestartPreventExitStatus=78).
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_CONFIG)
    except CacheError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    sys.exit(code)


# --- config -------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Check lane config files."""


@config.command("check")
@click.argument("file", type=CONFIG_PATH)
def config_check(file: Path) -> None:
    """Validate FILE and the files it names (trust file, TLS files, models folder, cache and
    outbox paths): print every problem (file, line, key, value, what is allowed) or a summary.

    Exits 0 when the file is valid (warnings, such as a private key others can read, are
    printed) and 78 (EX_CONFIG) when it is not: what `run` would refuse.
    """
    from agent.config import ConfigError
    from agent.config.files import load_checked

    try:
        cfg, warnings = load_checked(file)
    except ConfigError as exc:
        _print_problems(exc)
        sys.exit(EX_CONFIG)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    lane = cfg.lane
    programs = ",".join(p.value for p in lane.allowed_programs)
    click.echo(
        f"{file}: ok: lane {lane.port_id}/{lane.lane_id} {lane.lane_type.value} "
        f"programs={programs} reader={_reader_summary(cfg)} "
        f"broker={cfg.mqtt.host}:{cfg.mqtt.port} client_id={cfg.mqtt_client_id}"
    )


def _reader_summary(cfg: AgentConfig) -> str:
    from agent.config import LlrpReaderConfig

    reader = cfg.reader
    if isinstance(reader, LlrpReaderConfig):
        return f"llrp:{reader.host}:{reader.port}"
    return f"lane_controller:{reader.device}"


def _print_problems(exc: Exception) -> None:
    problems = getattr(exc, "problems", [exc])
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    click.echo(f"{len(problems)} problem(s); nothing was started.", err=True)


# --- cache --------------------------------------------------------------------------------


@main.group()
def cache() -> None:
    """Inspect and load the local credential cache."""


_db_option = click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Cache file to use instead of the one named in --config.",
)


def _cache_path(config_path: Path, db_path: Path | None) -> Path:
    if db_path is not None:
        return db_path
    from agent.config import ConfigError, load_config

    try:
        return load_config(config_path).cache.path
    except ConfigError as exc:
        _print_problems(exc)
        click.echo("hint: pass --db PATH to name the cache file directly.", err=True)
        sys.exit(EX_CONFIG)


@cache.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@_config_option
@_db_option
@click.option(
    "--progress-every",
    "progress_every_s",
    type=click.FloatRange(0.0, 3600.0),
    default=5.0,
    show_default=True,
    help="Seconds between progress reports of a plain import: a bar on a terminal, INFO log "
    "lines otherwise (0: every 1024 records).",
)
def cache_import(
    file: Path, config_path: Path, db_path: Path | None, progress_every_s: float
) -> None:
    """Load credentials from FILE: a signed bundle, or plain .ndjson/.jsonl/.csv; all or nothing.

    A bundle is verified against cache.trust_file (docs/bundles.md). Plain files are for labs and
    the first load, and are refused into a cache kept by signed bundles.
    """
    from agent.cache import CacheError, CacheImportError, CredentialCache
    from agent.cli_central import import_bundle, is_bundle

    if is_bundle(file):
        sys.exit(import_bundle(file, config_path, db_path))

    from agent.import_progress import ImportProgressReporter

    path = _cache_path(config_path, db_path)
    progress = ImportProgressReporter(str(file))
    try:
        with CredentialCache.open(path) as store:
            try:
                report = store.import_file(
                    file, progress=progress, progress_interval_s=progress_every_s
                )
            finally:
                progress.close()  # ends the bar's line before any error or the summary
    except CacheImportError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        click.echo(f"{file}: refused; the cache is unchanged.", err=True)
        sys.exit(EX_DATAERR)
    except CacheError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    click.echo(
        f"{file}: imported {report.records} records ({report.added} added, "
        f"{report.replaced} replaced) into {path}; data version {report.data_version}"
    )


@cache.command("lookup")
@click.argument("ref")
@_config_option
@_db_option
def cache_lookup(ref: str, config_path: Path, db_path: Path | None) -> None:
    """Show the cache record for one tag reference (EPC hex). Exits 1 when unknown."""
    from agent.cache import CacheError, CredentialCache

    path = _cache_path(config_path, db_path)
    try:
        with CredentialCache.open(path, read_only=True) as store:
            record = store.lookup(ref)
    except CacheError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    if record is None:
        click.echo(f"{ref.upper()}: not in the cache", err=True)
        sys.exit(1)
    click.echo(
        json.dumps(
            {
                "ref": record.ref,
                "document_type": record.document_type.value,
                "program": record.program.value,
                "status": record.status.value,
                "valid_from": record.valid_from.isoformat(),
                "valid_until": record.valid_until.isoformat(),
                "holder_ref": record.holder_ref,
                "vehicles": [
                    {"plate": v.plate, "jurisdiction": v.jurisdiction} for v in record.vehicles
                ],
            },
            indent=2,
        )
    )


@cache.command("stats")
@_config_option
@_db_option
def cache_stats(config_path: Path, db_path: Path | None) -> None:
    """Counts by status and program, data version and file size, as JSON."""
    from agent.cache import CacheError, CredentialCache

    path = _cache_path(config_path, db_path)
    if not path.exists():
        click.echo(
            f"error: {path}: no cache file yet; load one with 'lane-agent cache import'", err=True
        )
        sys.exit(EX_NOINPUT)
    try:
        with CredentialCache.open(path, read_only=True) as store:
            stats = store.stats()
    except CacheError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    click.echo(json.dumps(stats.as_dict(), indent=2, default=str))


# --- simulate & demo ----------------------------------------------------------------------


@main.command()
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="Scenario file (see config/scenarios/).",
)
@click.option(
    "--speed",
    type=click.FloatRange(0.1, 1000.0),
    default=1.0,
    show_default=True,
    help="Play the scenario this many times faster than real time (the controller's clock "
    "runs as fast, so the lane sees the scenario's timing at any speed).",
)
@click.option(
    "--truth",
    "truth_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the scenario's truth here as JSON once it starts: each vehicle's cards and "
    "when it was at the booth on the agent's clock (docs/scenarios.md).",
)
@click.option(
    "--reader",
    "family",
    type=click.Choice(["lane_controller", "llrp"]),
    default="lane_controller",
    show_default=True,
    help="Play the scenario as the lane controller on a pseudo-terminal (prints its device "
    "path), or as an LLRP reader on a loopback TCP port (prints host:port).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="LLRP only: the TCP port on 127.0.0.1 (0: a free one).",
)
@click.option(
    "--timestamps",
    type=click.Choice(["utc", "uptime", "both"]),
    default="both",
    show_default=True,
    help="LLRP only: which reader clocks stamp reads and events.",
)
def simulate(
    scenario_path: Path,
    speed: float,
    truth_path: Path | None,
    family: str,
    port: int,
    timestamps: str,
) -> None:
    """Play a lane's reader from a scenario: the lane controller on a pseudo-terminal, or an LLRP
    reader on a loopback port (loop n on GPI n); prints where to connect first."""
    if family == "llrp":
        from llrp.emulator import main as run_llrp_emulator

        argv = [str(scenario_path), "--speed", str(speed), "--port", str(port)]
        argv += ["--timestamps", timestamps]
        if truth_path is not None:
            argv += ["--truth", str(truth_path)]
        sys.exit(run_llrp_emulator(argv))
    from firmware_bridge.simulator import run_simulator_cli

    sys.exit(run_simulator_cli(scenario_path, speed, sys.stdout, truth_path=truth_path))


@main.group()
def scenarios() -> None:
    """Seeded suites of the lane situations that make correlation hard (docs/scenarios.md)."""


@scenarios.command("generate")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--vehicles",
    type=click.IntRange(1, 100_000),
    default=40,
    show_default=True,
    help="Vehicles per situation.",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=1, show_default=True)
@click.option(
    "--situation",
    "situations",
    multiple=True,
    help="Only this situation (repeatable); default: all. See `lane-agent scenarios list`.",
)
def scenarios_generate(
    directory: Path, vehicles: int, seed: int, situations: tuple[str, ...]
) -> None:
    """Write one format 2 scenario per situation and the credentials.ndjson they need."""
    from agent.dev.suite import CREDENTIALS_FILE, write_suite
    from firmware_bridge.situations import SITUATIONS

    unknown = [name for name in situations if name not in SITUATIONS]
    if unknown:
        click.echo(
            f"error: unknown situation {unknown[0]!r}; known: {', '.join(SITUATIONS)}", err=True
        )
        sys.exit(EX_USAGE)
    written = write_suite(
        directory, vehicles=vehicles, seed=seed, situations=situations or tuple(SITUATIONS)
    )
    for entry in written:
        click.echo(f"{entry.path}: {len(entry.scenario.vehicles)} vehicles ({entry.situation})")
    click.echo(f"{directory / CREDENTIALS_FILE}: credentials for `lane-agent cache import`")


@scenarios.command("list")
def scenarios_list() -> None:
    """The situations a suite can hold, one line each."""
    from firmware_bridge.situations import SITUATIONS

    for name, build in SITUATIONS.items():
        summary = (build.__doc__ or "").strip().splitlines()[0] if build.__doc__ else ""
        click.echo(f"{name:14} {summary}")


@main.command()
@click.option("--vehicles", type=click.IntRange(1, 10_000), default=5, show_default=True)
@click.option(
    "--speed",
    type=click.FloatRange(0.5, 100.0),
    default=4.0,
    show_default=True,
    help="Simulated time runs this many times faster than real time.",
)
@click.option("--seed", type=int, default=None, help="Seed for a reproducible lane.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the demo's cache, outbox and broker log here (default: a temp dir).",
)
@click.option(
    "--reader",
    type=click.Choice(["lane_controller", "llrp"]),
    default="lane_controller",
    show_default=True,
    help="Simulate the lane controller on a pseudo-terminal, or an LLRP reader on loopback.",
)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Plate models folder (default: the models shipped with the agent).",
)
def demo(
    vehicles: int,
    speed: float,
    seed: int | None,
    workdir: Path | None,
    reader: str,
    models_dir: Path | None,
) -> None:
    """The agent's main job on simulated lane hardware, end to end.

    Starts a simulated lane controller on a pseudo-terminal (or an LLRP reader on a loopback
    port), a private Mosquitto on a free loopback port, a demo credential cache and the agent,
    then prints each vehicle as the booth sees it and each crossing as central operations
    receive it, and exits after VEHICLES crossings: 0 when every part worked, 1 naming the part
    that did not (crossings missing, the plate reader or the camera unavailable).
    """
    from agent.dev.demo import run_demo
    from agent.logs import configure_logging

    # The demo prints crossings on stdout; the agent's own log shows only trouble.
    configure_logging("WARNING", "text")

    sys.exit(
        run_demo(
            vehicles=vehicles,
            speed=speed,
            seed=seed,
            workdir=workdir,
            out=sys.stdout,
            reader=reader,
            models_dir=models_dir,
        )
    )


# --- doctor -------------------------------------------------------------------------------


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of lines.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.5, 60.0),
    default=5.0,
    show_default=True,
    help="The longest each network or serial step waits, in seconds.",
)
@click.option(
    "--snapshot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where the camera check saves a frame with the ROI drawn "
    "(default: lane-agent-doctor.jpg in the temp folder).",
)
def doctor(config_path: Path, as_json: bool, timeout_s: float, snapshot: Path | None) -> None:
    """Check the whole lane: config and the files it names, reader, camera, models, broker,
    cache, disk, clock and the systemd unit; one line each, OK / WARN / FAIL / SKIP, and the fix
    for each FAIL (docs/doctor.md).

    Exits 0 when nothing failed, 1 on any FAIL, 78 when the config cannot be loaded.
    """
    import tempfile

    from agent.doctor import run_doctor
    from agent.doctor.report import render_json, render_text

    if snapshot is None:
        snapshot = Path(tempfile.gettempdir()) / "lane-agent-doctor.jpg"
    result = run_doctor(config_path, timeout_s=timeout_s, snapshot=snapshot)
    if as_json:
        click.echo(render_json(result.checks, exit_code=result.exit_code), nl=False)
    else:
        click.echo(render_text(result.checks), nl=False)
    sys.exit(result.exit_code)


from agent.cli_central import bundle, keys  # noqa: E402 - the central tools, registered last
from agent.cli_plate import plate  # noqa: E402
from agent.cli_status import status  # noqa: E402

main.add_command(keys)
main.add_command(bundle)
main.add_command(plate)
main.add_command(status)

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

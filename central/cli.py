"""The ``lane-central`` command: thin — parse, call the library, map errors to exit codes.

Exit codes as in ``lane-agent`` (sysexits): 65 bad input data, 69 a service (PostgreSQL, the
broker) unavailable, 78 configuration (the database schema is at another version).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from central import __version__

EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_CONFIG = 78

_dsn_option = click.option(
    "--dsn",
    envvar="LANE_CENTRAL_DSN",
    default=None,
    help="PostgreSQL DSN (env LANE_CENTRAL_DSN; default postgresql://postgres@127.0.0.1:5432/lane_central).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")


def broker_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--host, --port and the TLS options shared by every command that talks to the broker."""
    options = [
        click.option(
            "--host", default="127.0.0.1", show_default=True, envvar="LANE_CENTRAL_MQTT_HOST"
        ),
        click.option(
            "--port",
            "mqtt_port",
            type=click.IntRange(1, 65535),
            default=None,
            help="Broker port [default: 8883 with --tls-ca, else 1883].",
        ),
        click.option(
            "--tls-ca",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="CA that signed the broker's certificate: turns TLS on.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Client certificate (mutual TLS; its CN is this client's identity).",
        ),
        click.option(
            "--tls-key",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Key of --tls-cert.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def broker_settings(
    host: str,
    mqtt_port: int | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> Any:
    """BrokerSettings from the options; exits 78 on unusable TLS files."""
    from central.mqtt import BrokerSettings, TlsFilesError, TlsSettings

    tls = None
    if tls_ca is not None:
        tls = TlsSettings(tls_ca, tls_cert, tls_key)
        try:
            tls.check()
        except TlsFilesError as error:
            _fail(str(error), EX_CONFIG)
    elif tls_cert is not None or tls_key is not None:
        _fail(
            "--tls-cert/--tls-key need --tls-ca (the CA that signed the broker's certificate)",
            EX_CONFIG,
        )
    port = mqtt_port or (8883 if tls else 1883)
    return BrokerSettings(host=host, port=port, tls=tls)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _connect(dsn: str | None) -> Any:
    from central import db

    try:
        return db.connect(db.resolve_dsn(dsn), autocommit=True)
    except db.DatabaseUnavailableError as error:
        _fail(
            f"{error}; is PostgreSQL running and the DSN right (--dsn / LANE_CENTRAL_DSN)?",
            EX_UNAVAILABLE,
        )


def _reader(dsn: str | None) -> Any:
    """A connection for the read commands, refused with a hint if the schema is not current."""
    from central import migrate

    connection = _connect(dsn)
    try:
        migrate.require_latest(connection)
    except migrate.MigrationError as error:
        _fail(str(error), EX_CONFIG)
    return connection


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lane-central")
def main() -> None:
    """Central operations: ingest lane events into PostgreSQL, read the lane board, sign and
    publish credential cache bundles."""


# --- db -------------------------------------------------------------------------------------


@main.group("db")
def database() -> None:
    """The PostgreSQL schema: versioned migrations and monthly partitions."""


@database.command("upgrade")
@_dsn_option
@click.option("--to", "to_version", type=click.IntRange(1), default=None,
              help="Stop at this version (default: the latest).")  # fmt: skip
def db_upgrade(dsn: str | None, to_version: int | None) -> None:
    """Apply pending migrations and create the coming months' partitions (safe to repeat)."""
    from central import migrate

    connection = _connect(dsn)
    try:
        report = migrate.upgrade(connection, to_version=to_version)
    except migrate.MigrationError as error:
        _fail(str(error), EX_CONFIG)
        return
    for migration in report.applied:
        click.echo(f"applied {migration.version:04d}_{migration.name}")
    for name in report.partitions_created:
        click.echo(f"created partition {name}")
    click.echo(f"schema version {report.from_version} -> {report.to_version}")


@database.command("status")
@_dsn_option
def db_status(dsn: str | None) -> None:
    """Schema version, pending migrations and the crossings partitions."""
    from central import migrate, partitions

    connection = _connect(dsn)
    version = migrate.current_version(connection)
    latest = migrate.latest_version()
    click.echo(f"schema version {version} (this release: {latest})")
    for migration in migrate.available()[version:]:
        click.echo(f"pending {migration.version:04d}_{migration.name}")
    if version >= 1:
        for name, rows in partitions.list_partitions(connection):
            click.echo(f"partition {name}: ~{rows} rows")


# --- ingest -----------------------------------------------------------------------------------


@main.command()
@_dsn_option
@broker_options
@click.option("--client-id", default="central-ingest-1", show_default=True,
              help="MQTT client id; the broker keeps this worker's session under it. With the "
              "shipped broker config it is the certificate's CN.")  # fmt: skip
@click.option(
    "--group", default="lane-central", show_default=True, help="Shared subscription group."
)
@click.option(
    "--prefix", default="lane-agent/v1", show_default=True, help="Topic prefix of the lanes."
)
@click.option("--batch-max", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--batch-wait", "batch_wait_s", type=click.FloatRange(0, 5), default=0.05, show_default=True,
              help="Seconds a batch waits for more messages after its first.")  # fmt: skip
@click.option("--receive-maximum", type=click.IntRange(1, 65535), default=2000, show_default=True,
              help="Unacknowledged messages the broker may hand this worker.")  # fmt: skip
@click.option("--write-mode", type=click.Choice(["insert", "copy"]), default="copy", show_default=True,
              help="How crossings are written (bench/bench_central.py compares them).")  # fmt: skip
@click.option("--ack-interval", "ack_interval_s", type=click.FloatRange(0, 60), default=1.0, show_default=True,
              help="Shortest time between two watermarks of one lane.")  # fmt: skip
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["auto", "text", "json"]), default="auto", show_default=True
)
def ingest(
    dsn: str | None, host: str, mqtt_port: int | None, tls_ca: Path | None, tls_cert: Path | None,
    tls_key: Path | None, client_id: str, group: str, prefix: str, batch_max: int,
    batch_wait_s: float, receive_maximum: int, write_mode: str, ack_interval_s: float,
    log_level: str, log_format: str,
) -> None:  # fmt: skip
    """Run one ingest worker until SIGTERM/SIGINT (what systemd starts; run several to share)."""
    from central import db, migrate
    from central.ingest import IngestSettings, IngestWorker
    from central.logs import configure_logging
    from central.store import WriteMode

    configure_logging(log_level, log_format)
    settings = IngestSettings(
        dsn=db.resolve_dsn(dsn),
        broker=broker_settings(host, mqtt_port, tls_ca, tls_cert, tls_key),
        client_id=client_id, group=group, prefix=prefix, batch_max=batch_max,
        batch_wait_s=batch_wait_s, receive_maximum=receive_maximum,
        write_mode=WriteMode(write_mode), ack_interval_s=ack_interval_s,
    )  # fmt: skip
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        IngestWorker(settings).run(stop)
    except db.DatabaseUnavailableError as error:
        _fail(str(error), EX_UNAVAILABLE)
    except migrate.MigrationError as error:
        _fail(str(error), EX_CONFIG)


# --- what ops read ------------------------------------------------------------------------------


@main.command()
@_dsn_option
@click.option("--port", "port_id", default=None, help="Only this port of entry.")
@_json_option
def lanes(dsn: str | None, port_id: str | None, as_json: bool) -> None:
    """Every lane at a glance: state, last crossing, watermark, gaps, outbox, cache, faults."""
    from central import board

    rows = board.lanes(_reader(dsn), port_id=port_id)
    if as_json:
        _print_json(rows)
        return
    click.echo(format_lanes(rows))


@main.command()
@_dsn_option
@click.option("--port", "port_id", default=None)
@click.option("--lane", "lane_id", default=None)
@click.option("--since", type=click.DateTime(), default=None, help="Closed at or after (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Closed before (UTC).")
@click.option("--card", "card_ref", default=None, help="A card reference (EPC, upper-case hex).")
@click.option("--plate", default=None, help="A plate as read (A-Z 0-9).")
@click.option(
    "--recommendation", type=click.Choice(["EXPEDITE", "PRIMARY", "REFER", "ALERT"]), default=None
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_json_option
def crossings(
    dsn: str | None, port_id: str | None, lane_id: str | None, since: datetime | None,
    until: datetime | None, card_ref: str | None, plate: str | None, recommendation: str | None,
    limit: int, as_json: bool,
) -> None:  # fmt: skip
    """Stored crossings, newest first, with filters (all must hold)."""
    from central import board

    selected = board.CrossingFilter(
        port_id=port_id, lane_id=lane_id, since=_utc(since), until=_utc(until),
        card_ref=card_ref.upper() if card_ref else None, plate=plate.upper() if plate else None,
        recommendation=recommendation, limit=limit,
    )  # fmt: skip
    rows = board.crossings(_reader(dsn), selected)
    if as_json:
        _print_json(rows)
        return
    click.echo(format_crossings(rows))


@main.command()
@_dsn_option
@click.option("--open", "open_only", is_flag=True, help="Only gaps still open.")
@click.option("--port", "port_id", default=None)
@click.option("--lane", "lane_id", default=None)
@_json_option
def gaps(
    dsn: str | None, open_only: bool, port_id: str | None, lane_id: str | None, as_json: bool
) -> None:
    """Missing seqs noticed per lane: when each gap opened and closed."""
    from central import board

    rows = board.gaps(_reader(dsn), open_only=open_only, port_id=port_id, lane_id=lane_id)
    if as_json:
        _print_json(rows)
        return
    _echo_table(
        ["LANE", "SEQS", "OPENED", "CLOSED", "OPEN FOR"],
        [
            [
                f"{row['port_id']}/{row['lane_id']}",
                f"{row['first_seq']}-{row['last_seq']}"
                if row["size"] > 1
                else str(row["first_seq"]),
                _clock(row["opened_at"]),
                _clock(row["closed_at"]) if row["closed_at"] else "open",
                _age(row["open_s"]),
            ]
            for row in rows
        ],
    )
    click.echo(f"{len(rows)} gap(s), {sum(1 for row in rows if row['open'])} open")


@main.command()
@_dsn_option
@click.option("--reason", default=None, help="Only this reason code (docs/central.md lists them).")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_json_option
def quarantine(dsn: str | None, reason: str | None, limit: int, as_json: bool) -> None:
    """Refused messages: topic, reason and detail (payloads stay in the table)."""
    from central import board

    rows = board.quarantine(_reader(dsn), reason=reason, limit=limit)
    if as_json:
        _print_json(rows)
        return
    _echo_table(
        ["ID", "RECEIVED", "TOPIC", "REASON", "DETAIL"],
        [
            [str(row["id"]), _clock(row["received_at"]), row["topic"], row["reason"], row["detail"]]
            for row in rows
        ],
    )
    click.echo(f"{len(rows)} message(s)")


# --- demo -------------------------------------------------------------------------------------


@main.command()
@click.option("--lanes", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option(
    "--vehicles", type=click.IntRange(1, 1000), default=5, show_default=True, help="Per lane."
)
@click.option("--speed", type=click.FloatRange(1.0, 20.0), default=4.0, show_default=True,
              help="Simulated time runs this many times faster than real time.")  # fmt: skip
@click.option("--admin-dsn", envvar="LANE_CENTRAL_ADMIN_DSN", default="postgresql://postgres@127.0.0.1:5432/postgres",
              show_default=True, help="A role that may create the demo's database (env LANE_CENTRAL_ADMIN_DSN).")  # fmt: skip
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Keep the lanes' files and every log here (default: a temp dir).")  # fmt: skip
@click.option(
    "--keep-database", is_flag=True, help="Keep the demo's database to explore it afterwards."
)
@click.option("--timeout", "timeout_s", type=click.FloatRange(10), default=120.0, show_default=True)
def demo(lanes: int, vehicles: int, speed: float, admin_dsn: str, workdir: Path | None,
         keep_database: bool, timeout_s: float) -> None:  # fmt: skip
    """Simulated lanes, a broker, two ingest workers and PostgreSQL, end to end.

    Each lane is the real lane agent on a simulated lane controller; the demo ends when every
    crossing is stored and every lane's outbox was emptied by the ingest's watermark.
    """
    from central.demo import DemoError, run_demo

    try:
        code = run_demo(
            lanes=lanes, vehicles=vehicles, speed=speed, admin_dsn=admin_dsn, workdir=workdir,
            keep_database=keep_database, timeout_s=timeout_s, out=sys.stdout,
        )  # fmt: skip
    except DemoError as error:
        _fail(str(error), EX_UNAVAILABLE)
        return
    sys.exit(code)


# --- formatting -------------------------------------------------------------------------------


def _print_json(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps(rows, indent=2, default=str))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    )


def _echo_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    click.echo(table(header, rows))


def format_lanes(rows: list[dict[str, Any]]) -> str:
    """The board as ``lane-central lanes`` prints it."""
    return (
        table(
            [
                "LANE",
                "STATE",
                "SEEN",
                "LAST CROSSING",
                "ACKED/HIGHEST",
                "GAPS",
                "OUTBOX",
                "CACHE",
                "FAULTS",
            ],
            [
                [
                    f"{row['port_id']}/{row['lane_id']}",
                    row["state"],
                    _age(row["seen_age_s"]),
                    _clock(row["last_crossing_at"]),
                    f"{row['acked_seq']}/{row['highest_seq']}",
                    str(row["open_gaps"])
                    + (f" ({row['missing']} missing)" if row["missing"] else ""),
                    _outbox(row),
                    _cache(row),
                    ",".join(row["faults"]) or "-",
                ]
                for row in rows
            ],
        )
        + f"\n{len(rows)} lane(s)"
    )


def format_crossings(rows: list[dict[str, Any]]) -> str:
    """Crossings as ``lane-central crossings`` prints them (card numbers not shown, only counts)."""
    return (
        table(
            ["CLOSED", "LANE", "SEQ", "RECOMMENDATION", "REASONS", "CARDS", "PLATE", "DELIVERY"],
            [
                [
                    _clock(row["closed_at"]),
                    f"{row['port_id']}/{row['lane_id']}",
                    str(row["seq"]),
                    row["recommendation"],
                    ",".join(row["reasons"]) or "-",
                    str(row["cards"]),
                    row["plate_text"] or "-",
                    f"{row['delivery_s']:.1f} s",
                ]
                for row in rows
            ],
        )
        + f"\n{len(rows)} crossing(s)"
    )


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=UTC)


def _clock(text: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    if text is None:
        return "-"
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _outbox(row: dict[str, Any]) -> str:
    if row["outbox_depth"] is None:
        return "-"
    oldest = row["outbox_oldest_unsent_age_s"]
    return f"{row['outbox_depth']} unsent, {row['outbox_rows']} kept" + (
        f", oldest {_age(oldest)}" if oldest else ""
    )


def _cache(row: dict[str, Any]) -> str:
    if row["cache_version"] is None and row["cache_age_s"] is None:
        return "-"
    version = "-" if row["cache_version"] is None else f"v{row['cache_version']}"
    stale = " STALE" if row["cache_stale"] else ""
    return f"{version} {_age(row['cache_age_s'])}{stale}"


if __name__ == "__main__":
    main()

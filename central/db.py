"""PostgreSQL connections: one place that turns a DSN into a connection and its errors into ours.

The DSN is a libpq connection string or URI (``postgresql://ingest@db.example/lane_central``);
passwords belong in a libpq password file (``PGPASSFILE``) or a systemd credential, never on the
command line.
"""

from __future__ import annotations

import contextlib
import os

import psycopg

Connection = psycopg.Connection[tuple[object, ...]]

DSN_ENV = "LANE_CENTRAL_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/lane_central"


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached or refused the connection."""


def resolve_dsn(dsn: str | None) -> str:
    """The DSN given, else ``$LANE_CENTRAL_DSN``, else the local default."""
    return dsn or os.environ.get(DSN_ENV) or DEFAULT_DSN


def connect(dsn: str, *, autocommit: bool = False, application: str = "lane-central") -> Connection:
    """A connection with a short connect timeout; raises :class:`DatabaseUnavailableError`.

    The server checks every second that the client is still there while a statement runs
    (``client_connection_check_interval``, PostgreSQL 14+): a worker killed while its
    transaction waits on a lock or in its commit gets that transaction rolled back, instead of
    committed later by a backend nobody listens to, and its lane locks are freed.
    """
    try:
        connection = psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=5, application_name=application
        )
    except psycopg.OperationalError as error:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL ({_safe(dsn)}): {error}"
        ) from error
    with contextlib.suppress(psycopg.errors.UndefinedObject):  # before 14: run without the check
        connection.execute("SET client_connection_check_interval = '1s'")
    if not autocommit:
        connection.commit()
    return connection


def _safe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "unparsable DSN"
    info.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in sorted(info.items()))

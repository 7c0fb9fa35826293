"""Central's fixtures: a PostgreSQL database of the test's own, at the latest schema version.

Each test run connects to the machine's PostgreSQL (``$LANE_CENTRAL_TEST_DSN``, default
``postgresql://postgres@127.0.0.1:5432/postgres``: the server and a role allowed to create
databases), creates a database with a unique name, gives each test a schema of its own in it,
and drops the database at the end.
An unreachable server fails the tests with what to do, never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from central import migrate

ADMIN_DSN_ENV = "LANE_CENTRAL_TEST_DSN"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    return os.environ.get(ADMIN_DSN_ENV) or DEFAULT_ADMIN_DSN


def dsn_for(database: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_dsn(), dbname=database)


class Databases:
    """One database for the test run; each test gets a schema of its own in it.

    A schema per test (through ``search_path`` in the DSN) isolates tests as well as a database
    per test would, without the checkpoint every ``DROP DATABASE`` forces (over a second each).
    """

    def __init__(self) -> None:
        try:
            self._admin = psycopg.connect(admin_dsn(), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as error:
            pytest.fail(
                f"PostgreSQL is not reachable with {ADMIN_DSN_ENV}={admin_dsn()!r}: {error}\n"
                "Central's tests need a PostgreSQL server and a role that may create databases: "
                "`./dev.sh test` installs and starts one (apt-get install postgresql).",
                pytrace=False,
            )
        self.name = f"lane_central_test_{uuid.uuid4().hex[:12]}"
        self._admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self._database = psycopg.connect(dsn_for(self.name), autocommit=True)

    def create(self) -> str:
        """A new empty schema; the DSN returned puts it first on the search path."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self._database.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return psycopg.conninfo.make_conninfo(
            dsn_for(self.name), options=f"-c search_path={schema}"
        )

    def drop(self, dsn: str) -> None:
        options = psycopg.conninfo.conninfo_to_dict(dsn)["options"]
        schema = str(options).split("=", 1)[1]
        self._database.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    def drop_all(self) -> None:
        self._database.close()
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
        )
        self._admin.close()


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    made = Databases()
    try:
        yield made
    finally:
        made.drop_all()


@pytest.fixture
def empty_dsn(databases: Databases) -> Iterator[str]:
    """A new, empty schema of its own (in the test run's database)."""
    dsn = databases.create()
    try:
        yield dsn
    finally:
        databases.drop(dsn)


@pytest.fixture
def dsn(empty_dsn: str) -> str:
    """A schema of its own at the latest schema version."""
    with psycopg.connect(empty_dsn, autocommit=True) as connection:
        migrate.upgrade(connection)
    return empty_dsn

"""The lane state file's schema: one SQLite file, its tables and their migrations.

The outbox (:mod:`agent.state.outbox`) and the engine's input journal
(:mod:`agent.state.journal`) share one file so that a crossing and the clearing of the inputs
it consumed commit in one transaction. The version lives in ``PRAGMA user_version``; an older
file is migrated in place, statement by statement inside the caller's transaction, so a
migration that fails leaves the file as it was.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 5

# AUTOINCREMENT on outbox.id: row ids appear in logs and in central's reconciliation, so a pruned id
# is never handed out again.
_SCHEMA = (
    """
    CREATE TABLE stream_seq (
        stream   TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        stream     TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        topic      TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        qos        INTEGER NOT NULL,
        retain     INTEGER NOT NULL,
        priority   INTEGER NOT NULL,
        created_at REAL    NOT NULL,
        sent_at    REAL,
        UNIQUE (stream, seq)
    )
    """,
    "CREATE INDEX outbox_unsent ON outbox (priority, id) WHERE sent_at IS NULL",
    "CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL",
)
# Version 2: the acknowledgement watermark central ingest confirmed, per stream.
_SCHEMA_V2 = (
    """
    CREATE TABLE stream_ack (
        stream      TEXT PRIMARY KEY,
        acked_seq   INTEGER NOT NULL,
        received_at REAL    NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX outbox_evictable ON outbox (priority, id) WHERE priority > 0",
)
# Version 3: the lane engine's input journal (agent/state/journal.py), here so that a crossing and
# the clearing of the inputs it consumed commit in one transaction. AUTOINCREMENT: journal ids
# only grow, also after every row was cleared.
_SCHEMA_V3 = (
    """
    CREATE TABLE IF NOT EXISTS input_journal (
        id   INTEGER PRIMARY KEY AUTOINCREMENT,
        at   REAL    NOT NULL,
        kind TEXT    NOT NULL,
        body TEXT    NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS journal_state (
        key          INTEGER PRIMARY KEY CHECK (key = 0),
        through_id   INTEGER NOT NULL,
        committed    INTEGER NOT NULL,
        engine_state TEXT,
        boot_id      INTEGER,
        seq          INTEGER
    )
    """,
)

# Version 4: the controller clock's mapping of the boot the journal's last input came from
# (agent/lane/clock.py), so that a restarted agent maps that boot's timestamps as before.
_SCHEMA_V4 = ("ALTER TABLE journal_state ADD COLUMN clock TEXT",)

# Version 5: reader families (agent/readers): the journal keeps the reader's opaque resume token
# of the last input instead of the lane controller's boot and seq, which become the token of the
# lane controller family (agent/readers/lane_controller.py). The old columns stay, unused.
_SCHEMA_V5 = (
    "ALTER TABLE journal_state ADD COLUMN resume TEXT",
    "UPDATE journal_state SET resume = json_object('boot_id', boot_id, 'seq', seq)"
    " WHERE boot_id IS NOT NULL AND seq IS NOT NULL",
)


def migrate(connection: sqlite3.Connection, version: int) -> None:
    """Bring a file at schema ``version`` (0: new) to :data:`SCHEMA_VERSION`.

    Runs inside the caller's open transaction; the caller refuses versions newer than
    :data:`SCHEMA_VERSION` before calling.
    """
    # Statement by statement: executescript() would commit the transaction half-way.
    if version == 0:  # a new file
        for statement in _SCHEMA:
            connection.execute(statement)
    if version < 2:
        for statement in _SCHEMA_V2:
            connection.execute(statement)
    if version < 3:
        for statement in _SCHEMA_V3:
            connection.execute(statement)
    if version < 4:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(journal_state)")}
        if "clock" not in columns:  # a version 3 file created the table without it
            for statement in _SCHEMA_V4:
                connection.execute(statement)
    if version < 5:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(journal_state)")}
        if "resume" not in columns:
            for statement in _SCHEMA_V5:
                connection.execute(statement)
    if version < SCHEMA_VERSION:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

"""The results database of `poolhttp fetch`: SQLite, WAL mode, batched transactions.

Schema (see docs/bulk.md): `runs` has a row per run; `results` a row per input record of a
run, keyed by (run_id, line) with a PRIMARY KEY, where `line` is the record's line number in the
input. That key is what makes `--resume` exact: a record is either committed (and skipped on
resume) or not (and fetched on resume); it can never be stored twice. Requests in flight when a
run is killed were not committed, so they are sent again on resume: exactly once in the
database, at least once on the wire.

The file is marked with `PRAGMA application_id`; a database without our mark that already has
tables is refused, never written to.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import EXIT_FAILED, CliError

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Row", "RunInfo", "Store"]

APPLICATION_ID = 0x70687462  # "phtb": poolhttp bulk results
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE runs (
    run_id      INTEGER PRIMARY KEY,
    input       TEXT NOT NULL,          -- absolute path of the URL list, or '-' (stdin)
    fingerprint TEXT,                   -- JSON {size, head, tail}: resume refuses a changed file
    options     TEXT NOT NULL,          -- JSON: method, headers, format, keep_bodies, ...
    state       TEXT NOT NULL CHECK (state IN ('running', 'interrupted', 'done')),
    sessions    INTEGER NOT NULL DEFAULT 1,  -- 1 + the number of times it was resumed
    pid         INTEGER,                -- process of the current session
    host        TEXT,
    lines       INTEGER,                -- input lines, once the whole input was read
    started_at  REAL NOT NULL,          -- Unix time
    updated_at  REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE results (
    run_id     INTEGER NOT NULL REFERENCES runs (run_id),
    line       INTEGER NOT NULL,        -- line number of the record in the input (1-based)
    key        TEXT,                    -- the record's own key (CSV/JSONL "key"), if any
    method     TEXT NOT NULL,
    url        TEXT NOT NULL,           -- for a malformed line: the line's text
    status     INTEGER,                 -- NULL when no response arrived
    error_type TEXT,                    -- e.g. 'ConnectError', or 'MalformedLine' for bad input
    error      TEXT,
    elapsed    REAL,                    -- seconds, retries included
    attempts   INTEGER NOT NULL,
    size       INTEGER,                 -- body bytes
    sha256     TEXT,                    -- of the body, hex
    headers    TEXT,                    -- JSON [[name, value], ...]
    body       BLOB,                    -- only with --keep-bodies
    fetched_at REAL NOT NULL,           -- Unix time
    session    INTEGER NOT NULL,        -- which session of the run stored it
    PRIMARY KEY (run_id, line)
);
CREATE INDEX results_status ON results (run_id, status);
"""

_INSERT = ("INSERT INTO results (run_id, line, key, method, url, status, error_type, error, "
           "elapsed, attempts, size, sha256, headers, body, fetched_at, session) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

#: One results row, in _INSERT's column order.
Row = tuple[int, int, str | None, str, str, int | None, str | None, str | None, float | None,
            int, int | None, str | None, str | None, bytes | None, float, int]


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    session: int
    input: str
    options: dict[str, Any]
    state: str
    fingerprint: dict[str, Any] | None
    pid: int | None = None
    host: str | None = None


class Store:
    """One results database, open for writing. Not thread-safe: use it from one thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self.committed = 0  # rows committed by this process

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open or create a results database; CliError if it is not ours or cannot be used."""
        path = Path(path)
        if path.is_dir():
            raise CliError(f"{path}: is a directory, not a database file")
        try:
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise CliError(f"{path}: cannot open the database: {exc}") from None
        try:
            _check_ours(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            # Durable against a killed process (the WAL is in the OS's hands at each commit);
            # an OS crash may lose the last batches, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            if _user_version(conn) == 0:
                _create(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise CliError(f"{path}: cannot use the database: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn)

    # -- runs ---------------------------------------------------------------------------------
    def start_run(self, input_id: str, fingerprint: dict[str, Any] | None,
                  options: dict[str, Any]) -> RunInfo:
        now = time.time()
        with self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO runs (input, fingerprint, options, state, pid, host, started_at, "
                "updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (input_id, _dump(fingerprint), json.dumps(options), os.getpid(),
                 socket.gethostname(), now, now))
        assert cursor.lastrowid is not None
        return RunInfo(cursor.lastrowid, 1, input_id, options, "running", fingerprint)

    def latest_run(self, input_id: str) -> RunInfo | None:
        row = self._conn.execute(
            "SELECT run_id, sessions, input, options, state, fingerprint, pid, host FROM runs "
            "WHERE input = ? ORDER BY run_id DESC LIMIT 1", (input_id,)).fetchone()
        if row is None:
            return None
        return RunInfo(row[0], row[1], row[2], json.loads(row[3]), row[4],
                       json.loads(row[5]) if row[5] else None, row[6], row[7])

    def resume_run(self, run: RunInfo) -> RunInfo:
        with self._transaction():
            self._conn.execute(
                "UPDATE runs SET state = 'running', sessions = sessions + 1, pid = ?, host = ?, "
                "updated_at = ?, finished_at = NULL WHERE run_id = ?",
                (os.getpid(), socket.gethostname(), time.time(), run.run_id))
        return RunInfo(run.run_id, run.session + 1, run.input, run.options, "running",
                       run.fingerprint)

    def end_run(self, run_id: int, state: str, lines: int | None) -> None:
        now = time.time()
        with self._transaction():
            self._conn.execute(
                "UPDATE runs SET state = ?, lines = COALESCE(?, lines), updated_at = ?, "
                "finished_at = CASE WHEN ? = 'done' THEN ? ELSE finished_at END "
                "WHERE run_id = ?", (state, lines, now, state, now, run_id))

    def done_lines(self, run_id: int, chunk: int = 10_000) -> Iterator[int]:
        """Line numbers already stored for a run, ascending, read in chunks: memory stays
        small for a million-line run, and no read transaction stays open across commits."""
        last = 0
        while True:
            rows = self._conn.execute(
                "SELECT line FROM results WHERE run_id = ? AND line > ? ORDER BY line LIMIT ?",
                (run_id, last, chunk)).fetchall()
            for (line,) in rows:
                yield line
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def count(self, run_id: int) -> dict[str, int]:
        """Rows stored for a run: all, with a response, failed, malformed input."""
        row = self._conn.execute(
            "SELECT count(*), count(status), "
            "sum(status IS NULL AND error_type != 'MalformedLine'), "
            "sum(error_type = 'MalformedLine') FROM results WHERE run_id = ?",
            (run_id,)).fetchone()
        return {"rows": row[0], "responses": row[1], "failed": row[2] or 0,
                "malformed": row[3] or 0}

    # -- results ------------------------------------------------------------------------------
    def write(self, rows: list[Row]) -> None:
        """Commit `rows` in one transaction: all of them are stored, or none."""
        try:
            with self._transaction():
                self._conn.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            raise CliError(f"{self.path}: writing results failed: {exc}",
                           status=EXIT_FAILED) from exc
        self.committed += len(rows)

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse any database that poolhttp did not create (an empty one is made ours)."""
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    except sqlite3.DatabaseError:
        raise CliError(f"{path}: not a SQLite database; refusing to touch it (choose another "
                       "--db path)") from None
    if app_id == APPLICATION_ID:
        version = _user_version(conn)
        if version > SCHEMA_VERSION:
            raise CliError(f"{path}: written by a newer poolhttp (schema {version}, this one "
                           f"knows {SCHEMA_VERSION}); upgrade poolhttp or use another --db")
        return
    if app_id != 0 or tables:
        what = f"tables: {', '.join(tables)}" if tables else f"application_id {app_id:#x}"
        raise CliError(f"{path}: a SQLite database that poolhttp did not create ({what}); "
                       "refusing to write to it (choose another --db path)")


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    if _user_version(conn) != 0:  # another process created it while we waited for the lock
        conn.execute("COMMIT")
        return
    try:
        for statement in _SCHEMA.split(";"):  # one by one: executescript() would commit
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)

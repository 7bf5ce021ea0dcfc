"""The results database of `poolhttp fetch`: SQLite, WAL mode, batched transactions.

Schema (see docs/bulk.md): `runs` has a row per run, `sessions` one per session of it
(each resume is a session), `snapshots` the pool and progress about once a second, and
`fetches` a row per input record of a run, keyed by (run_id, line) with a PRIMARY KEY, where
`line` is the record's line number in the input; the `results` view shows those rows with
their run and readable times. That key is what makes `--resume` exact: a record is either
committed (and skipped on resume) or not (and fetched on resume); it can never be stored
twice. Requests in flight when a run is killed were not committed, so they are sent again on
resume: exactly once in the database, at least once on the wire.

The file is marked with `PRAGMA application_id`; a database without our mark that already has
tables is refused, never written to.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import EXIT_FAILED, CliError

__all__ = ["APPLICATION_ID", "COLUMNS", "SCHEMA_VERSION", "Row", "RunCounts", "RunInfo",
           "Store"]

APPLICATION_ID = 0x70687462  # "phtb": poolhttp bulk results
SCHEMA_VERSION = 2

# Tables keep times as Unix seconds (REAL: cheap to write, compare and subtract); the views
# show them as ISO-8601 UTC text. `fetches` is written, the `results` view is what to query.
_TABLES = """
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
CREATE TABLE fetches (
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
    origin     TEXT,                    -- 'https://example.org:443', NULL for a malformed line
    content_type TEXT,                  -- the response's Content-Type header
    final_url  TEXT,                    -- after redirects, NULL when it is `url`
    PRIMARY KEY (run_id, line)
);
CREATE INDEX fetches_status ON fetches (run_id, status);
CREATE TABLE sessions (
    run_id     INTEGER NOT NULL REFERENCES runs (run_id),
    session    INTEGER NOT NULL,
    options    TEXT NOT NULL,           -- JSON: this session's settings (concurrency, ...)
    state      TEXT NOT NULL CHECK (state IN ('running', 'interrupted', 'done')),
    pid        INTEGER,
    host       TEXT,
    started_at REAL NOT NULL,
    ended_at   REAL,
    requests   INTEGER,                 -- results this session stored
    pool       TEXT,                    -- JSON: the pool's figures per origin at its end
    PRIMARY KEY (run_id, session)
);
CREATE TABLE snapshots (
    run_id    INTEGER NOT NULL,
    session   INTEGER NOT NULL,
    at        REAL NOT NULL,            -- Unix time, about once a second
    done      INTEGER NOT NULL,         -- results this session so far
    failed    INTEGER NOT NULL,
    open      INTEGER NOT NULL,         -- the pool: connections open, idle, requests waiting
    idle      INTEGER NOT NULL,
    waiting   INTEGER NOT NULL,
    created   INTEGER NOT NULL,         -- connections opened so far, requests on reused ones
    reused    INTEGER NOT NULL
)
"""

_VIEWS = """
CREATE VIEW results AS
SELECT f.run_id, f.line, f.key, f.method, f.url, f.origin, f.status, f.content_type,
       CASE WHEN f.status IS NULL THEN NULL ELSE COALESCE(f.final_url, f.url) END AS final_url,
       f.error_type, f.error, f.elapsed, f.attempts, f.size, f.sha256, f.headers, f.body,
       strftime('%Y-%m-%dT%H:%M:%fZ', f.fetched_at, 'unixepoch') AS fetched_at,
       f.fetched_at AS fetched_unix, f.session, r.input,
       r.run_id = (SELECT max(l.run_id) FROM runs AS l WHERE l.input = r.input) AS latest
FROM fetches AS f JOIN runs AS r USING (run_id);
CREATE VIEW run_sessions AS
SELECT s.run_id, s.session, r.input, r.state AS run_state, s.state, s.options, s.pid, s.host,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.started_at, 'unixepoch') AS started_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.ended_at, 'unixepoch') AS ended_at,
       s.ended_at - s.started_at AS seconds, s.requests, s.pool
FROM sessions AS s JOIN runs AS r USING (run_id)
"""

_INSERT = ("INSERT INTO fetches (run_id, line, key, method, url, origin, status, content_type, "
           "final_url, error_type, error, elapsed, attempts, size, sha256, headers, body, "
           "fetched_at, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

#: One results row, in _INSERT's column order.
Row = tuple[int, int, str | None, str, str, str | None, int | None, str | None, str | None,
            str | None, str | None, float | None, int, int | None, str | None, str | None,
            bytes | None, float, int]
#: The names of Row's fields.
COLUMNS = ("run_id", "line", "key", "method", "url", "origin", "status", "content_type",
           "final_url", "error_type", "error", "elapsed", "attempts", "size", "sha256",
           "headers", "body", "fetched_at", "session")


_SNAPSHOT = ("INSERT INTO snapshots (run_id, session, at, done, failed, open, idle, waiting, "
             "created, reused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


@dataclass
class RunCounts:
    """Rows a run stored, over all its sessions."""

    rows: int = 0
    responses: int = 0
    failed: int = 0
    malformed: int = 0
    bytes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


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
        self._pending_snapshots: list[tuple[Any, ...]] = []

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
            if _user_version(conn) < SCHEMA_VERSION:
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
                  options: dict[str, Any], settings: dict[str, Any]) -> RunInfo:
        now = time.time()
        with self._transaction():
            cursor = self._conn.execute(
                "INSERT INTO runs (input, fingerprint, options, state, pid, host, started_at, "
                "updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (input_id, _dump(fingerprint), json.dumps(options), os.getpid(),
                 socket.gethostname(), now, now))
            assert cursor.lastrowid is not None
            self._start_session(cursor.lastrowid, 1, settings, now)
        return RunInfo(cursor.lastrowid, 1, input_id, options, "running", fingerprint)

    _RUN_COLUMNS = "run_id, sessions, input, options, state, fingerprint, pid, host"

    def runs_over(self, input_id: str) -> list[RunInfo]:
        """Every run over `input_id`, oldest first."""
        rows = self._conn.execute(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE input = ? ORDER BY run_id",
            (input_id,)).fetchall()
        return [_run_info(row) for row in rows]

    def run(self, run_id: int) -> RunInfo | None:
        row = self._conn.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        return None if row is None else _run_info(row)

    def resume_run(self, run: RunInfo, settings: dict[str, Any]) -> RunInfo:
        now = time.time()
        with self._transaction():
            self._conn.execute(
                "UPDATE runs SET state = 'running', sessions = sessions + 1, pid = ?, host = ?, "
                "updated_at = ?, finished_at = NULL WHERE run_id = ?",
                (os.getpid(), socket.gethostname(), now, run.run_id))
            self._start_session(run.run_id, run.session + 1, settings, now)
        return RunInfo(run.run_id, run.session + 1, run.input, run.options, "running",
                       run.fingerprint)

    def _start_session(self, run_id: int, session: int, settings: dict[str, Any],
                       now: float) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO sessions (run_id, session, options, state, pid, host, "
            "started_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            (run_id, session, json.dumps(settings), os.getpid(), socket.gethostname(), now))

    def end_run(self, run: RunInfo, state: str, lines: int | None, *, requests: int | None = None,
                pool: dict[str, Any] | None = None) -> None:
        now = time.time()
        with self._transaction():
            self._conn.execute(
                "UPDATE runs SET state = ?, lines = COALESCE(?, lines), updated_at = ?, "
                "finished_at = CASE WHEN ? = 'done' THEN ? ELSE finished_at END "
                "WHERE run_id = ?", (state, lines, now, state, now, run.run_id))
            self._conn.execute(
                "UPDATE sessions SET state = ?, ended_at = ?, requests = COALESCE(?, requests), "
                "pool = COALESCE(?, pool) WHERE run_id = ? AND session = ?",
                (state, now, requests, _dump(pool), run.run_id, run.session))
            if self._pending_snapshots:
                self._conn.executemany(_SNAPSHOT, self._pending_snapshots)
        self._pending_snapshots.clear()

    def snapshot(self, run: RunInfo, values: tuple[int, int, int, int, int, int, int]) -> None:
        """One row of `snapshots`: (done, failed, open, idle, waiting, created, reused), now.
        Written in the same transaction as the next batch of results when there is one."""
        self._pending_snapshots.append((run.run_id, run.session, time.time(), *values))

    def done_lines(self, run_id: int, chunk: int = 10_000) -> Iterator[int]:
        """Line numbers already stored for a run, ascending, read in chunks: memory stays
        small for a million-line run, and no read transaction stays open across commits."""
        last = 0
        while True:
            rows = self._conn.execute(
                "SELECT line FROM fetches WHERE run_id = ? AND line > ? ORDER BY line LIMIT ?",
                (run_id, last, chunk)).fetchall()
            for (line,) in rows:
                yield line
            if len(rows) < chunk:
                return
            last = rows[-1][0]

    def breakdown(self, run_id: int) -> RunCounts:
        """What a whole run stored, every session of it: one pass over its rows."""
        counts = RunCounts()
        for status, error_type, n, size in self._conn.execute(
                "SELECT status, error_type, count(*), sum(size) FROM fetches WHERE run_id = ? "
                "GROUP BY 1, 2", (run_id,)):
            counts.rows += n
            if status is not None:
                counts.responses += n
                counts.statuses[status] += n
                counts.bytes += size or 0
            elif error_type == "MalformedLine":
                counts.malformed += n
            else:
                counts.failed += n
                counts.errors[error_type or "Error"] += n
        return counts

    # -- results ------------------------------------------------------------------------------
    def write(self, rows: list[Row]) -> None:
        """Commit `rows` (and the snapshots taken since the last commit) in one transaction:
        all of them are stored, or none."""
        try:
            with self._transaction():
                self._conn.executemany(_INSERT, rows)
                if self._pending_snapshots:
                    self._conn.executemany(_SNAPSHOT, self._pending_snapshots)
            self._pending_snapshots.clear()
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
    """Create the schema, or bring a database of an earlier schema up to this one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _user_version(conn)  # again: another process may have done it meanwhile
        if version == 0:
            _execute_all(conn, _TABLES + ";" + _VIEWS)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        elif version == 1:
            _upgrade_from_1(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):  # one by one: executescript() would commit
        if statement.strip():
            conn.execute(statement)


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 had `results` as a table, no origin, content type or final URL, and no
    sessions or snapshots. Its rows are kept; origins are filled in from their URLs."""
    conn.execute("DROP INDEX IF EXISTS results_status")
    conn.execute("ALTER TABLE results RENAME TO fetches")
    for column in ("origin", "content_type", "final_url"):
        conn.execute(f"ALTER TABLE fetches ADD COLUMN {column} TEXT")
    conn.execute("CREATE INDEX fetches_status ON fetches (run_id, status)")
    tables = _TABLES[_TABLES.index("CREATE TABLE sessions"):]
    _execute_all(conn, tables + ";" + _VIEWS)
    conn.execute(
        "INSERT INTO sessions (run_id, session, options, state, pid, host, started_at, "
        "ended_at) SELECT run_id, sessions, json_extract(options, '$.settings'), state, pid, "
        "host, started_at, finished_at FROM runs")
    conn.create_function("poolhttp_origin", 1, _origin_of, deterministic=True)
    conn.execute("UPDATE fetches SET origin = poolhttp_origin(url) "
                 "WHERE error_type IS NOT 'MalformedLine'")


@functools.lru_cache(maxsize=4096)
def _origin_key(prefix: str) -> str | None:
    from poolhttp import URL  # only here: opening a database otherwise parses no URL

    try:
        return URL(prefix).origin.key
    except ValueError:
        return None


def _origin_of(url: str) -> str | None:
    """The origin key of a stored URL, parsed once per scheme-and-authority prefix."""
    slash = url.find("/", url.find("://") + 3)
    query = url.find("?", url.find("://") + 3)
    ends = [i for i in (slash, query) if i >= 0]
    return _origin_key(url[:min(ends)] if ends else url)


def _run_info(row: tuple[Any, ...]) -> RunInfo:
    return RunInfo(row[0], row[1], row[2], json.loads(row[3]), row[4],
                   json.loads(row[5]) if row[5] else None, row[6], row[7])


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)

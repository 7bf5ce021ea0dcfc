"""`poolhttp export DB --format csv|jsonl|parquet`: the rows of a results database as a file.

The database is opened read-only (an SQLite `mode=ro` URI), after the checks `fetch` makes
(`_store._check_ours`), so exporting never writes to it, even while a run is writing: the
export reads one consistent snapshot. A database of schema 1 (an earlier poolhttp) is read as
it: temporary views on the read-only connection show it exactly as the upgrade to schema 2
would, origins included, without upgrading it.

Rows are read from the `results` view with a cursor, in chunks, and written as they come, so
memory stays bounded whatever the size of the run: chunks of CHUNK_ROWS rows (and, with
--bodies, at most about CHUNK_BYTES of bodies), Parquet row groups of --row-group-size rows or
ROW_GROUP_BYTES of data. pyarrow is imported for Parquet only (the `parquet` extra).

A FILE is written under a temporary name beside it and renamed into place once complete: an
export that fails or is interrupted leaves no partial file, and an existing FILE as it was.
"""

from __future__ import annotations

import argparse
import base64
import csv
import importlib
import io
import json
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Protocol

from ._errors import EXIT_FAILED, CliError
from ._store import _VIEWS, APPLICATION_ID, _check_ours, _origin_of, _user_version

__all__ = ["CHUNK_BYTES", "CHUNK_ROWS", "FIELDS", "FORMATS", "ROW_GROUP_BYTES",
           "ROW_GROUP_ROWS", "run_export"]

FORMATS = ("csv", "jsonl", "parquet")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}

#: The exported columns, in this order: the `results` view's, `body` (only with --bodies)
#: moved to the end. Each with its kind, which is its Parquet type.
FIELDS: tuple[tuple[str, str], ...] = (
    ("run_id", "int"), ("line", "int"), ("key", "str"), ("method", "str"), ("url", "str"),
    ("origin", "str"), ("status", "int"), ("content_type", "str"), ("final_url", "str"),
    ("error_type", "str"), ("error", "str"), ("elapsed", "float"), ("attempts", "int"),
    ("size", "int"), ("sha256", "str"), ("headers", "str"), ("fetched_at", "str"),
    ("fetched_unix", "float"), ("session", "int"), ("input", "str"), ("latest", "int"))
_NAMES = tuple(name for name, _ in FIELDS)

CHUNK_ROWS = 1000  # rows read from the database at a time
CHUNK_BYTES = 8 << 20  # with --bodies: a chunk ends early once its bodies reach this
ROW_GROUP_ROWS = 65_536  # Parquet: rows per row group (--row-group-size)
ROW_GROUP_BYTES = 64 << 20  # Parquet: a row group ends early once its data reaches this

PARQUET_HINT = "pip install 'poolhttp[parquet]'"

Rows = list[tuple[Any, ...]]


def run_export(args: argparse.Namespace) -> int:
    fmt = _format_of(args.format, args.output)
    to_stdout = args.output in (None, "-")
    if fmt != "parquet" and args.row_group_size is not None:
        raise CliError("--row-group-size is for --format parquet only")
    arrow: tuple[ModuleType, ModuleType] | None = None
    if fmt == "parquet":
        if to_stdout:
            raise CliError("parquet is written to a file: give -o FILE")
        arrow = _import_pyarrow()
    source = ResultsSource.open(Path(args.db))
    try:
        run_id = _choose_run(source, args.run_id, args.all_runs)
        target = _Target(args.output)
        out = target.open()
        try:
            if arrow is not None:
                writer: _Writer = _ParquetWriter(out, args.bodies, arrow,
                                                 args.row_group_size or ROW_GROUP_ROWS)
            elif fmt == "csv":
                writer = _CsvWriter(out, args.bodies)
            else:
                writer = _JsonlWriter(out, args.bodies)
            rows = 0
            for chunk in source.rows(run_id, bodies=args.bodies):
                writer.write(chunk)
                rows += len(chunk)
            writer.close()
            target.commit()
        except BrokenPipeError:
            target.discard()
            if to_stdout:
                _quiet_stdout()
            raise  # main() exits quietly
        except OSError as exc:
            target.discard()
            raise CliError(f"{target.label}: writing failed: {exc.strerror or exc}",
                           status=EXIT_FAILED) from None
        except BaseException:
            target.discard()
            raise
    finally:
        source.close()
    if not to_stdout:
        which = "every run" if run_id is None else f"run {run_id}"
        print(f"poolhttp export: {rows:,} rows of {which} to {target.label}", file=sys.stderr)
    return 0


def _format_of(requested: str | None, output: str | None) -> str:
    if requested is not None:
        return requested
    guessed = _SUFFIXES.get(Path(output).suffix.lower()) if output not in (None, "-") else None
    if guessed is None:
        raise CliError("say --format csv, jsonl or parquet (it is guessed only from an -o "
                       "FILE ending in .csv, .jsonl, .ndjson or .parquet)")
    return guessed


def _import_pyarrow() -> tuple[ModuleType, ModuleType]:
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise CliError(f"--format parquet needs pyarrow ({exc}): {PARQUET_HINT}") from None


# -- the database -----------------------------------------------------------------------------
class ResultsSource:
    """A results database open read-only, and the name of its `results` view."""

    def __init__(self, path: Path, conn: sqlite3.Connection, view: str) -> None:
        self.path = path
        self._conn = conn
        self._view = view

    @classmethod
    def open(cls, path: Path, *, command: str = "export") -> ResultsSource:
        """`command` ("export", "report") ends the message refusing a database not ours."""
        if path.is_dir():
            raise CliError(f"{path}: is a directory, not a results database")
        if not path.exists():
            raise CliError(f"{path}: no such file")
        try:
            # mode=ro: this connection cannot write, nor create the file.
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                                   timeout=10.0)
        except sqlite3.Error as exc:
            raise CliError(f"{path}: cannot open the database: {exc}") from None
        try:
            view = _results_view(conn, path, command)
        except sqlite3.Error as exc:
            conn.close()
            raise CliError(f"{path}: cannot read the database: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, view)

    @property
    def connection(self) -> sqlite3.Connection:
        """The read-only connection, for queries of its own (`poolhttp report`)."""
        return self._conn

    def run_ids(self) -> list[int]:
        return [r[0] for r in self._conn.execute("SELECT run_id FROM runs ORDER BY run_id")]

    def run_state(self, run_id: int) -> str:
        row = self._conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0])

    def rows(self, run_id: int | None, *, bodies: bool) -> Iterator[Rows]:
        """The rows of one run (None: of every run) in FIELDS' order, in chunks."""
        columns = ", ".join((*_NAMES, "body") if bodies else _NAMES)
        sql = f"SELECT {columns} FROM {self._view}"
        # Both orders are those of the primary key of `fetches`: no sorting, rows stream.
        if run_id is None:
            cursor = self._conn.execute(sql + " ORDER BY run_id, line")
        else:
            cursor = self._conn.execute(sql + " WHERE run_id = ? ORDER BY line", (run_id,))
        try:
            yield from _chunks(cursor, len(_NAMES) if bodies else None)
        except sqlite3.Error as exc:
            raise CliError(f"{self.path}: reading results failed: {exc}",
                           status=EXIT_FAILED) from None
        finally:
            cursor.close()

    def close(self) -> None:
        self._conn.close()


def _chunks(cursor: sqlite3.Cursor, body_index: int | None) -> Iterator[Rows]:
    if body_index is None:
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield rows
        return
    chunk: Rows = []
    size = 0
    for row in cursor:  # one row at a time: bodies may be large
        chunk.append(row)
        size += len(row[body_index] or b"")
        if len(chunk) >= CHUNK_ROWS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _results_view(conn: sqlite3.Connection, path: Path, command: str = "export") -> str:
    """The view to read; CliError for a database that is not a poolhttp results database."""
    try:
        _check_ours(conn, path)
    except CliError as exc:
        # The same checks as fetch's; its advice about writing and --db does not apply here.
        message = str(exc)
        cut = message.find("; refusing to ")
        raise CliError(message if cut < 0 else message[:cut] + f"; nothing to {command}") from None
    version = _user_version(conn)
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if app_id != APPLICATION_ID or version < 1:
        raise CliError(f"{path}: an empty database, not a poolhttp results database")
    if version == 1:
        _schema_1_views(conn)
        return "temp.results"
    return "main.results"


def _schema_1_views(conn: sqlite3.Connection) -> None:
    """Show a schema-1 database as schema 2 without changing it: schema 1 had `results` as
    a table without origin, content type or final URL. A temporary `fetches` view adds them
    as the upgrade does (origins from the URLs, the others NULL), and the `results` view of
    schema 2 is created over it, as a temporary view too (the temp schema is the
    connection's own, writable even on a read-only connection, and searched first)."""
    conn.create_function("poolhttp_origin", 1, _origin_of, deterministic=True)
    conn.execute(
        "CREATE TEMP VIEW fetches AS SELECT *, CASE WHEN error_type IS NOT 'MalformedLine' "
        "THEN poolhttp_origin(url) END AS origin, NULL AS content_type, NULL AS final_url "
        "FROM main.results")
    results = next(s for s in _VIEWS.split(";") if "CREATE VIEW results AS" in s)
    conn.execute(results.replace("CREATE VIEW", "CREATE TEMP VIEW", 1))


def _choose_run(source: ResultsSource, run_id: int | None, all_runs: bool, *,
                command: str = "export", doing: str = "exporting",
                others: str = "--run N for another, --all-runs for every run") -> int | None:
    """The run to read: `run_id`, or the newest (None with `all_runs`); notes on standard
    error. `command`, `doing` and `others` word them for another command (`report`)."""
    runs = source.run_ids()
    if not runs:
        raise CliError(f"{source.path}: holds no runs yet; nothing to {command}")
    if all_runs:
        return None
    if run_id is not None:
        if run_id not in runs:
            raise CliError(f"{source.path}: has no run {run_id}; its runs: {_spans(runs)}")
    else:
        run_id = runs[-1]
        if len(runs) > 1:
            print(f"poolhttp {command}: {source.path} holds {len(runs)} runs "
                  f"({_spans(runs)}); {doing} the newest, run {run_id} ({others})",
                  file=sys.stderr)
    state = source.run_state(run_id)
    if state != "done":
        print(f"poolhttp {command}: run {run_id} is not finished ({state}): {doing} the rows "
              "it stored so far", file=sys.stderr)
    return run_id


def _spans(ids: Sequence[int]) -> str:
    """'1-3, 5, 8-9' for [1, 2, 3, 5, 8, 9] (ascending)."""
    spans: list[list[int]] = []
    for i in ids:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


# -- where the export goes --------------------------------------------------------------------
class _Target:
    """Standard output, or FILE: written as a temporary file beside it, renamed into place
    by commit() (a device or a pipe given as FILE is written directly)."""

    def __init__(self, spec: str | None) -> None:
        self._stdout = spec in (None, "-")
        self.label = "standard output" if self._stdout else str(spec)
        self._final: Path | None = None
        self._part: Path | None = None
        self._file: BinaryIO | None = None

    def open(self) -> BinaryIO:
        if self._stdout:
            sys.stdout.flush()
            return sys.stdout.buffer
        path = Path(self.label)
        if path.is_dir():
            raise CliError(f"{self.label}: is a directory (-o wants a file)")
        try:
            if path.exists() and not path.resolve().is_file():  # /dev/null, a FIFO, ...
                self._file = open(path, "wb")  # noqa: SIM115  # closed by commit/discard
                return self._file
            final = path.resolve()  # a symlink is written through, not replaced
            part = final.with_name(f".{final.name}.{os.getpid()}.part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise CliError(f"{self.label}: cannot write to it: {exc.strerror or exc}") from None
        self._final, self._part = final, part
        try:
            if final.exists():  # keep the mode of the file it replaces
                os.chmod(fd, stat.S_IMODE(final.stat().st_mode))
        except OSError:
            pass
        self._file = os.fdopen(fd, "wb")
        return self._file

    def commit(self) -> None:
        if self._file is None:
            sys.stdout.buffer.flush()
            return
        self._file.close()
        if self._part is not None and self._final is not None:
            os.replace(self._part, self._final)
            self._part = None

    def discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        if self._part is not None:
            try:
                self._part.unlink()
            except OSError:
                pass
            self._part = None


def _quiet_stdout() -> None:
    """After a broken pipe: what is still buffered for standard output goes nowhere, and
    no flush at exit fails again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# -- formats ----------------------------------------------------------------------------------
class _Writer(Protocol):
    def write(self, rows: Rows) -> None: ...

    def close(self) -> None: ...


def _b64(body: bytes | None) -> str | None:
    return None if body is None else base64.b64encode(body).decode("ascii")


class _CsvWriter:
    """A header row, then a row per result: NULL as an empty field, headers as their JSON
    text, the body (with --bodies) as base64 in the last column, body_base64."""

    def __init__(self, out: BinaryIO, bodies: bool) -> None:
        self._out = out
        self._bodies = bodies
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow((*_NAMES, "body_base64") if bodies else _NAMES)
        self._emit()

    def write(self, rows: Rows) -> None:
        if self._bodies:
            rows = [(*row[:-1], _b64(row[-1])) for row in rows]
        self._csv.writerows(rows)
        self._emit()

    def _emit(self) -> None:
        self._out.write(self._text.getvalue().encode("utf-8"))
        self._text.seek(0)
        self._text.truncate()

    def close(self) -> None:
        self._out.flush()


class _JsonlWriter:
    """One JSON object per result and line: NULL as null, headers as a list of [name, value]
    pairs, the body (with --bodies) as base64 in body_base64."""

    def __init__(self, out: BinaryIO, bodies: bool) -> None:
        self._out = out
        self._bodies = bodies
        self._headers = _NAMES.index("headers")

    def write(self, rows: Rows) -> None:
        lines = []
        for row in rows:
            record = dict(zip(_NAMES, row, strict=False))  # the body, if any, is left out
            headers = row[self._headers]
            if headers is not None:
                record["headers"] = json.loads(headers)
            if self._bodies:
                record["body_base64"] = _b64(row[-1])
            lines.append(json.dumps(record, ensure_ascii=False))
        lines.append("")
        self._out.write("\n".join(lines).encode("utf-8"))

    def close(self) -> None:
        self._out.flush()


class _ParquetWriter:
    """Columns typed: int64, float64, string, and binary for the body. A chunk becomes an
    Arrow record batch at once; batches are written as a row group once they hold
    `group_rows` rows or ROW_GROUP_BYTES of data."""

    def __init__(self, out: BinaryIO, bodies: bool, arrow: tuple[ModuleType, ModuleType],
                 group_rows: int) -> None:
        self._pa, pq = arrow
        pa = self._pa
        types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        fields = [pa.field(name, types[kind]) for name, kind in FIELDS]
        if bodies:
            fields.append(pa.field("body", pa.binary()))
        self._schema = pa.schema(fields)
        self._group_rows = group_rows
        self._pending: list[Any] = []  # record batches not yet written
        self._rows = 0
        self._bytes = 0
        self._out = out
        self._writer = pq.ParquetWriter(out, self._schema)

    def write(self, rows: Rows) -> None:
        pa = self._pa
        columns = list(zip(*rows, strict=True))
        arrays = []
        for field, values in zip(self._schema, columns, strict=True):
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowException, TypeError, ValueError) as exc:
                raise CliError(f"column {field.name}: a value that is not {field.type} "
                               f"({exc})", status=EXIT_FAILED) from None
        batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        self._pending.append(batch)
        self._rows += batch.num_rows
        self._bytes += batch.nbytes
        while self._rows >= self._group_rows or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        table = self._pa.Table.from_batches(self._pending, schema=self._schema)
        group = table.slice(0, self._group_rows)
        self._writer.write_table(group, row_group_size=self._group_rows)
        rest = table.slice(group.num_rows)
        self._pending = rest.to_batches()
        self._rows = rest.num_rows
        self._bytes = sum(b.nbytes for b in self._pending)

    def close(self) -> None:
        if self._rows:
            self._flush()
        self._writer.close()
        self._out.flush()

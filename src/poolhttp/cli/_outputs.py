"""Where `poolhttp fetch` results go: the SQLite store, a JSONL file, or both, in batches.

Rows are buffered and written together: the database commits a batch in one transaction, and
the JSONL lines of that batch are written right after the commit. The database is the ledger
`--resume` trusts; the JSONL file is a convenient copy, appended to (never truncated), and
after a kill it may lack the last batch or, once resumed, repeat records that were in flight.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
from pathlib import Path
from typing import IO

from poolhttp import BulkResult

from ._errors import EXIT_FAILED, CliError
from ._inputs import BadLine
from ._store import COLUMNS, Row, Store

__all__ = ["JsonlWriter", "Outputs", "bad_row", "headers_json", "result_row"]

# json.dumps with any argument builds a new JSONEncoder per call: one, made once, halves the
# cost of a row's headers (4.4 -> 2.5 us for nginx's five). check_circular: lists of str pairs.
_encode_json = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
# A byte that JSON would escape (or that is not ASCII): a pair without any is written as it is.
_needs_escaping = re.compile(rb'["\\\x00-\x1f\x7f-\xff]').search


def headers_json(raw: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    """A response's headers as the `headers` column's JSON text (`[["name", "value"], ...]`,
    exactly what json.dumps gives), and its Content-Type (several joined with ", ").

    Most responses' headers are plain ASCII with nothing to escape: those are joined straight
    into the JSON text, and the Content-Type is found in the same pass instead of from an
    index of every header (6.5 against 10.9 us per row for nginx's five, Headers included)."""
    if not raw:
        return "[]", None
    content_types = []
    plain = True
    for name, value in raw:
        if plain and (_needs_escaping(name) or _needs_escaping(value)):
            plain = False
        if len(name) == 12 and name.lower() == b"content-type":
            content_types.append(value.decode("latin-1"))
    content_type = ", ".join(content_types) if content_types else None
    if plain:
        text = '[["' + b'"], ["'.join([name + b'", "' + value for name, value in raw]
                                       ).decode("ascii") + '"]]'
    else:
        text = _encode_json([[n.decode("latin-1"), v.decode("latin-1")] for n, v in raw])
    return text, content_type


def result_row(run_id: int, session: int, line: int, key: str | None,
               result: BulkResult) -> Row:
    headers = content_type = None
    if result.headers is not None:
        headers, content_type = headers_json(result.headers.raw)
    status = result.status
    url = result.url
    final = result.final_url
    return (run_id, line, key, result.method, url, result.origin, status, content_type,
            None if final is None or final == url else final, result.error_type, result.error,
            round(result.elapsed, 6), result.attempts,
            result.size if status is not None else None, result.sha256, headers, result.body,
            time.time(), session)


def bad_row(run_id: int, session: int, bad: BadLine, method: str) -> Row:
    return (run_id, bad.line, None, method, bad.text, None, None, None, None, "MalformedLine",
            bad.problem, None, 0, None, None, None, None, time.time(), session)


assert COLUMNS[15:17] == ("headers", "body")  # the literal indexes below keep their types


class JsonlWriter:
    """Appends one JSON object per result to a file, or writes them to standard output."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._file: IO[str] = sys.stdout
        else:
            target = Path(path)
            if target.is_dir():
                raise CliError(f"{path}: is a directory (--jsonl wants a file)")
            try:
                self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115  # see close()
            except OSError as exc:
                raise CliError(f"{path}: cannot write to it: {exc.strerror or exc}") from None

    def write(self, rows: list[Row]) -> None:
        lines = []
        for row in rows:
            record: dict[str, object] = dict(zip(COLUMNS, row, strict=True))
            headers, body = row[15], row[16]
            record["headers"] = json.loads(headers) if headers is not None else None
            del record["body"]
            if record["final_url"] is None and record["status"] is not None:
                record["final_url"] = record["url"]  # as the database's `results` view shows it
            if body is not None:
                record["body_base64"] = base64.b64encode(body).decode("ascii")
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except OSError as exc:
            raise CliError(f"{self.path}: writing results failed: {exc.strerror or exc}",
                           status=EXIT_FAILED) from exc

    def close(self) -> None:
        if self._file is not sys.stdout:
            self._file.close()


class Outputs:
    """The store and/or the JSONL writer, fed row by row and written in batches."""

    def __init__(self, store: Store | None, jsonl: JsonlWriter | None, *, batch: int = 1000,
                 flush_seconds: float = 1.0) -> None:
        self.store = store
        self.jsonl = jsonl
        self._rows: list[Row] = []
        self._batch = batch
        self._flush_seconds = flush_seconds
        self._last = time.monotonic()
        self.written = 0

    def add(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch:
            self.flush()

    def flush_if_due(self) -> None:
        if self._rows and time.monotonic() - self._last >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        self._last = time.monotonic()
        if not rows:
            return
        if self.store is not None:
            self.store.write(rows)
        if self.jsonl is not None:
            self.jsonl.write(rows)
        self.written += len(rows)

"""The URL list of `poolhttp fetch`: read line by line, lazily, each record tagged with its line.

Formats (every record is one physical line; the line number is the record's identity in the
results database, which is what makes `--resume` exact):

- `lines`: one URL per line; blank lines and lines starting with `#` are skipped.
- `csv`:   the first non-blank line is a header naming a `url` column (any case); optional
           `method` and `key` columns. Quoted fields may not span lines.
- `jsonl`: one JSON object per line with a "url" string; optional "method", "headers" (object
           of strings), "body" (string) and "key".
- `auto`:  by file extension (.csv, .jsonl, .ndjson), else by the first non-blank line.

A line that cannot be used becomes a `BadLine` naming the problem; the run goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from poolhttp import URL, Headers, HTTPError, Request

from ._errors import CliError

__all__ = ["FORMATS", "BadLine", "InputSource", "Record", "RecordParser", "open_source",
           "valid_method"]

FORMATS = ("auto", "lines", "csv", "jsonl")
_MAX_LINE = 1024 * 1024  # longer lines are reported as malformed, not held in memory
_SHOWN = 200  # characters of a bad line quoted back
_ANY_URL = URL("http://localhost/")  # a request's method is checked whatever its URL


@dataclass(frozen=True)
class Record:
    line: int
    url: URL
    method: str | None = None
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes | None = None
    key: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    text: str
    problem: str


class InputSource:
    """Where the lines come from: a file, or standard input ('-')."""

    def __init__(self, name: str, stream: IO[bytes], *, is_regular: bool) -> None:
        self.name = name  # as given: a path, or "-"
        self._stream = stream
        self._regular = is_regular

    @property
    def label(self) -> str:
        return "standard input" if self.name == "-" else self.name

    @property
    def identity(self) -> str:
        """How a run records its input: the absolute path, or '-'."""
        return "-" if self.name == "-" else str(Path(self.name).resolve())

    def fingerprint(self) -> dict[str, Any] | None:
        """Size and digests of the first and last 64 KiB of a regular file (None for a pipe):
        enough to notice an edited, truncated or appended file without reading all of it."""
        if not self._regular or self.name == "-":
            return None
        with open(self.name, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = hashlib.sha256(f.read(65536)).hexdigest()
            f.seek(max(0, size - 65536))
            tail = hashlib.sha256(f.read(65536)).hexdigest()
        return {"size": size, "head": head, "tail": tail}

    def count_records(self) -> int | None:
        """Non-blank lines of a regular file (a progress total; None when unknown)."""
        if not self._regular or self.name == "-":
            return None
        count = 0
        with open(self.name, "rb") as f:
            for line in f:
                if line.strip() and not line.startswith(b"#"):
                    count += 1
        return count

    def first_line(self) -> tuple[int, str] | None:
        """(line number, text) of the first non-blank line of a regular file, for format
        detection; None for a pipe or an empty file."""
        if not self._regular or self.name == "-":
            return None
        with open(self.name, "rb") as f:
            for number, raw in enumerate(f, 1):
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    return number, text
        return None

    async def lines(self) -> AsyncIterator[tuple[int, bytes]]:
        """(line number, line without its end) for every line, 1-based."""
        if self._regular:
            # Reading a regular file never blocks for long: read it right in the event loop.
            for number, raw in enumerate(_split(self._stream), 1):
                yield number, raw
            return
        async for pair in _pipe_lines(self._stream):
            yield pair

    def close(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()


def open_source(name: str) -> InputSource:
    """Open the URL list; a CliError names the problem if it cannot be read."""
    if name == "-":
        stream = sys.stdin.buffer
        try:
            mode = os.fstat(stream.fileno()).st_mode
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read standard input: {exc}") from exc
        return InputSource("-", stream, is_regular=stat.S_ISREG(mode))
    path = Path(name)
    if path.is_dir():
        raise CliError(f"{name}: is a directory, not a file of URLs")
    try:
        file = open(path, "rb")  # noqa: SIM115  # closed by InputSource.close()
    except FileNotFoundError:
        raise CliError(f"{name}: no such file") from None
    except OSError as exc:
        raise CliError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    return InputSource(name, file, is_regular=stat.S_ISREG(os.fstat(file.fileno()).st_mode))


def _split(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines without their end, an over-long line cut short (and flagged by the parser)."""
    while True:
        raw = stream.readline(_MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > _MAX_LINE and not raw.endswith(b"\n"):
            while (rest := stream.readline(_MAX_LINE)) and not rest.endswith(b"\n"):
                pass  # skip the remainder of the over-long line
            yield raw  # longer than _MAX_LINE: the parser reports it
            continue
        yield raw.rstrip(b"\r\n")


async def _pipe_lines(stream: IO[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    """Lines of a pipe or terminal, read by a thread so a slow writer never blocks the loop.

    The thread reads whatever has arrived (`os.read`), so lines are handed over as soon as they
    are complete, in batches, through a bounded queue: it stops reading while the fetcher is
    behind. It is a daemon blocked at most in read(), so it can never keep the process alive.
    """
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[list[bytes] | BaseException | None] = asyncio.Queue(maxsize=8)
    stop = threading.Event()

    def put(item: list[bytes] | BaseException | None) -> None:
        future = asyncio.run_coroutine_threadsafe(batches.put(item), loop)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                future.result(timeout=0.5)
                return
        future.cancel()

    def reader() -> None:
        try:
            for batch in _read_batches(stream.fileno(), stop):
                put(batch)
            put(None)
        except OSError as exc:
            put(exc)
        except RuntimeError:
            pass  # the event loop is gone: nobody is reading any more

    threading.Thread(target=reader, name="poolhttp input reader", daemon=True).start()
    number = 0
    try:
        while (item := await batches.get()) is not None:
            if isinstance(item, BaseException):
                raise CliError(f"reading standard input failed: {item}")
            for raw in item:
                number += 1
                yield number, raw
    finally:
        stop.set()


def _read_batches(fd: int, stop: threading.Event) -> Iterator[list[bytes]]:
    """Complete lines as they arrive; an over-long line is cut to _MAX_LINE + 1 bytes (so the
    parser reports it) and the rest of it skipped."""
    tail = b""
    skipping = False
    while not stop.is_set():
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        batch = []
        for line in lines:
            if skipping:
                skipping = False  # the end of an over-long line
                continue
            # An over-long line that ended within this read is cut like one still arriving.
            batch.append(line[:_MAX_LINE + 1] if len(line) > _MAX_LINE else line.rstrip(b"\r"))
        if len(tail) > _MAX_LINE and not skipping:
            batch.append(tail[:_MAX_LINE + 1])
            tail, skipping = b"", True
        elif skipping:
            tail = b""
        if batch:
            yield batch
    if tail and not skipping:
        yield [tail.rstrip(b"\r")]


class RecordParser:
    """Turns numbered lines into `Record`s, `BadLine`s, or None for lines to skip."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise CliError(f"unknown input format {fmt!r} (choose from {', '.join(FORMATS)})")
        self.format = fmt
        self._columns: dict[str, int] | None = None  # CSV: column name -> index

    def feed(self, number: int, raw: bytes) -> Record | BadLine | None:
        if len(raw) > _MAX_LINE:
            return BadLine(number, _shown(raw), f"line longer than {_MAX_LINE} bytes")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            return BadLine(number, _shown(raw), f"not valid UTF-8 ({exc.reason} at byte "
                                                f"{exc.start})")
        if not text or (text.startswith("#") and self.format != "jsonl"):
            return None
        if self.format == "auto":
            self.format = detect(text)
        if self.format == "lines":
            return _url_record(number, text, text)
        if self.format == "jsonl":
            return _json_record(number, text)
        return self._csv_record(number, text)

    def _csv_record(self, number: int, text: str) -> Record | BadLine | None:
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            return BadLine(number, text[:_SHOWN], f"malformed CSV: {exc}")
        if self._columns is None:
            columns = {name.strip().lower(): i for i, name in enumerate(fields)}
            if "url" not in columns:
                raise CliError(f"line {number}: the CSV header has no 'url' column "
                               f"(columns: {', '.join(fields)})")
            self._columns = columns
            return None
        columns = self._columns
        if len(fields) != len(columns):
            return BadLine(number, text[:_SHOWN], f"{len(fields)} fields where the header has "
                                                  f"{len(columns)}")
        record = _url_record(number, fields[columns["url"]].strip(), text)
        if isinstance(record, BadLine):
            return record
        method = fields[columns["method"]].strip() if "method" in columns else ""
        try:
            checked = valid_method(method) if method else None
        except (HTTPError, ValueError) as exc:
            return BadLine(number, text[:_SHOWN], str(exc))
        key = fields[columns["key"]] if "key" in columns else None
        return Record(number, record.url, method=checked, key=key)


def detect(first: str) -> str:
    """The format a first non-blank line suggests."""
    if first.startswith("{"):
        return "jsonl"
    try:
        fields = next(csv.reader([first]))
    except csv.Error:
        return "lines"
    if any(f.strip().lower() == "url" for f in fields):
        return "csv"
    return "lines"


def format_for(name: str, first_line: str | None, requested: str) -> str:
    """Resolve `auto` for a file: its extension, else its first line."""
    if requested != "auto":
        return requested
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return detect(first_line) if first_line else "auto"


def _url_record(number: int, url: str, text: str) -> Record | BadLine:
    if not url:
        return BadLine(number, text[:_SHOWN], "no URL")
    try:
        return Record(number, URL(url))
    except HTTPError as exc:
        return BadLine(number, text[:_SHOWN], str(exc))


def _json_record(number: int, text: str) -> Record | BadLine:
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return BadLine(number, text[:_SHOWN], f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return BadLine(number, text[:_SHOWN], f"expected a JSON object, got {type(obj).__name__}")
    url = obj.get("url")
    if not isinstance(url, str):
        return BadLine(number, text[:_SHOWN], "no \"url\" string")
    record = _url_record(number, url.strip(), text)
    if isinstance(record, BadLine):
        return record
    try:
        method = valid_method(obj["method"]) if obj.get("method") is not None else None
        headers = obj.get("headers")
        if headers is not None and not (isinstance(headers, dict) and all(
                isinstance(v, str) for v in headers.values())):
            raise ValueError("\"headers\" must be an object of strings")
        body = obj.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError("\"body\" must be a string")
        key = obj.get("key")
        return Record(number, record.url, method=method,
                      headers=Headers(headers).raw if headers else None,
                      body=body.encode("utf-8") if body is not None else None,
                      key=None if key is None else str(key))
    except (HTTPError, ValueError, TypeError) as exc:
        return BadLine(number, text[:_SHOWN], str(exc))


def _shown(raw: bytes) -> str:
    return raw[:_SHOWN].decode("utf-8", "replace")


def valid_method(method: str) -> str:
    """`method` as the client sends it (upper-cased); InvalidRequest (a ValueError) unless it
    is an HTTP token. The rule is the client's own: building a `poolhttp.Request` checks it."""
    return Request(method, _ANY_URL).method

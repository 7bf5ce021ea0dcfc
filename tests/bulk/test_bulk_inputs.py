"""The URL-list parser and line readers of `poolhttp fetch`, without the network."""

from __future__ import annotations

import os
import threading

import pytest

from poolhttp.cli._errors import CliError
from poolhttp.cli._inputs import (
    _MAX_LINE,
    BadLine,
    Record,
    RecordParser,
    _read_batches,
    detect,
    format_for,
)


def parse(fmt: str, lines: list[bytes]) -> list[Record | BadLine | None]:
    parser = RecordParser(fmt)
    return [parser.feed(n, raw) for n, raw in enumerate(lines, 1)]


def test_lines_format_skips_blanks_and_comments_and_flags_bad_lines() -> None:
    out = parse("lines", [b"http://a.test/1", b"", b"  # note", b"\xff\xfe", b"mailto:x",
                          b"x" * (_MAX_LINE + 1)])
    assert isinstance(out[0], Record)
    assert str(out[0].url) == "http://a.test/1"
    assert out[1] is None
    assert out[2] is None
    assert isinstance(out[3], BadLine)
    assert "not valid UTF-8" in out[3].problem
    assert isinstance(out[4], BadLine)
    assert out[4].line == 5
    assert isinstance(out[5], BadLine)
    assert "longer than" in out[5].problem


def test_csv_columns_and_errors() -> None:
    out = parse("csv", [b"Key,URL,Method", b'k1,"http://a.test/x?a=1,2",post',
                        b"k2,http://a.test/y,", b"k3,http://a.test/z,G ET", b'k4,"unterminated'])
    assert out[0] is None  # the header
    first = out[1]
    assert isinstance(first, Record)
    assert (first.key, first.method, first.url.query) == ("k1", "POST", "a=1,2")
    second = out[2]
    assert isinstance(second, Record)
    assert second.method is None  # the run's --method applies
    assert isinstance(out[3], BadLine)
    assert "invalid HTTP method" in out[3].problem
    assert isinstance(out[4], BadLine)
    with pytest.raises(CliError, match="no 'url' column"):
        parse("csv", [b"a,b"])


def test_jsonl_records() -> None:
    out = parse("jsonl", [b'{"url": "http://a.test/", "method": "put", "headers": {"A": "1"}, '
                          b'"body": "x", "key": 3}', b"[1]", b'{"url": "http://a.test/", '
                          b'"headers": {"A": 1}}'])
    rec = out[0]
    assert isinstance(rec, Record)
    assert (rec.method, rec.headers, rec.body, rec.key) == ("PUT", [(b"A", b"1")], b"x", "3")
    assert isinstance(out[1], BadLine)
    assert "expected a JSON object" in out[1].problem
    assert isinstance(out[2], BadLine)
    assert "must be an object of strings" in out[2].problem


def test_format_detection() -> None:
    assert detect('{"url": 1}') == "jsonl"
    assert detect("id,url") == "csv"
    assert detect("URL") == "csv"
    assert detect("http://a.test/?q=a,b") == "lines"
    assert format_for("x.CSV", None, "auto") == "csv"
    assert format_for("x.ndjson", None, "auto") == "jsonl"
    assert format_for("x.txt", "http://a.test/", "auto") == "lines"
    assert format_for("x.txt", "http://a.test/", "csv") == "csv"
    parser = RecordParser("auto")
    assert parser.feed(1, b"") is None
    assert isinstance(parser.feed(2, b'{"url": "http://a.test/"}'), Record)
    assert parser.format == "jsonl"


def test_pipe_reader_batches_lines_and_cuts_overlong_ones() -> None:
    read_fd, write_fd = os.pipe()
    payload = b"a\r\nb\n" + b"x" * (_MAX_LINE + 10) + b"\nc\nlast-without-newline"

    def writer() -> None:
        with os.fdopen(write_fd, "wb") as f:
            for i in range(0, len(payload), 7000):
                f.write(payload[i:i + 7000])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        lines = [line for batch in _read_batches(read_fd, threading.Event()) for line in batch]
    finally:
        thread.join(10)
        os.close(read_fd)
    assert lines[:2] == [b"a", b"b"]
    assert len(lines[2]) == _MAX_LINE + 1  # cut, so that the parser reports it
    assert lines[3:] == [b"c", b"last-without-newline"]

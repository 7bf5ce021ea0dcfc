"""multipart/form-data encoding: what is produced parses back (with a parser written here,
and with the stdlib email parser), lengths are exact, files are streamed, names are safe."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolhttp import InvalidRequest
from poolhttp._multipart import CHUNK_SIZE, MultipartEncoding, encode_multipart, quote_name

# -- a parser of our own ---------------------------------------------------------------------


@dataclass
class Part:
    headers: list[tuple[str, str]]
    content: bytes
    params: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(found) <= 1, f"{name} appears {len(found)} times"
        return found[0] if found else None


_PARAM_RE = re.compile(r'; ([a-z]+)="([^"]*)"')


def unquote(value: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_disposition(value: str) -> dict[str, str]:
    assert value.startswith("form-data")
    rest = value[len("form-data"):]
    params = _PARAM_RE.findall(rest)
    assert "".join(f'; {k}="{v}"' for k, v in params) == rest, f"unparsed text in {value!r}"
    names = [k for k, _ in params]
    assert len(names) == len(set(names)), f"repeated parameter in {value!r}"
    return {k: unquote(v) for k, v in params}


def boundary_of(content_type: bytes) -> bytes:
    prefix = b"multipart/form-data; boundary="
    assert content_type.startswith(prefix)
    return content_type[len(prefix):]


def parse(content_type: bytes, body: bytes) -> list[Part]:
    """Split a multipart body strictly by RFC 2046: no preamble, no epilogue."""
    boundary = boundary_of(content_type)
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    assert pieces[0] == b""
    assert pieces[-1] == b"--\r\n"
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, separator, content = piece[2:].partition(b"\r\n\r\n")
        assert separator, "a part without the blank line after its headers"
        headers = []
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(": ")
            assert name
            assert "\r" not in value
            assert "\n" not in value
            headers.append((name, value))
        part = Part(headers, content)
        disposition = part.header("Content-Disposition")
        assert disposition is not None
        part.params = parse_disposition(disposition)
        parts.append(part)
    return parts


def body_of(encoded: MultipartEncoding) -> bytes:
    return b"".join(encoded.stream)


def encode_and_parse(data: Any, files: Any) -> list[Part]:
    encoded = encode_multipart(data, files)
    body = body_of(encoded)
    assert encoded.content_length in (None, len(body))
    return parse(encoded.content_type, body)


def email_parts(encoded: MultipartEncoding) -> list[EmailMessage]:
    raw = b"Content-Type: " + encoded.content_type + b"\r\n\r\n" + body_of(encoded)
    message = BytesParser(policy=policy.HTTP).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert message.is_multipart()
    assert not message.defects
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


# -- round trips -----------------------------------------------------------------------------

BINARY = bytes(range(256)) * 4 + b"\r\n--\r\n\r\n--x--"


def test_fields_and_files_round_trip() -> None:
    parts = encode_and_parse(
        {"title": "Hello wörld", "count": 3},
        {
            "image": ("photo.png", BINARY),
            "doc": ("résumé.pdf", io.BytesIO(b"%PDF-1.7"), None),
            "raw": ("blob", b"\x00\x01"),
            "typed": ("data.bin", "text ✓", "text/x-custom; charset=utf-8"),
            "anonymous": (None, b"no filename"),
        },
    )
    got = [(p.params, p.header("Content-Type"), p.content) for p in parts]
    assert got == [
        ({"name": "title"}, None, "Hello wörld".encode()),
        ({"name": "count"}, None, b"3"),
        ({"name": "image", "filename": "photo.png"}, "image/png", BINARY),
        ({"name": "doc", "filename": "résumé.pdf"}, "application/pdf", b"%PDF-1.7"),
        ({"name": "raw", "filename": "blob"}, "application/octet-stream", b"\x00\x01"),
        ({"name": "typed", "filename": "data.bin"}, "text/x-custom; charset=utf-8",
         "text ✓".encode()),
        ({"name": "anonymous"}, "application/octet-stream", b"no filename"),
    ]


def test_the_email_parser_reads_it_too() -> None:
    encoded = encode_multipart(
        {"field": "value"},
        [("upload", ("a.txt", b"line one\r\nline two\r\n")), ("upload", ("b.png", BINARY))],
    )
    parts = email_parts(encoded)
    assert [part.get_content_disposition() for part in parts] == ["form-data"] * 3
    assert [part.get_param("name", header="content-disposition") for part in parts] == [
        "field", "upload", "upload"]
    assert [part.get_filename() for part in parts] == [None, "a.txt", "b.png"]
    assert [part.get_content_type() for part in parts[1:]] == ["text/plain", "image/png"]
    assert [part.get_payload(decode=True) for part in parts] == [
        b"value", b"line one\r\nline two\r\n", BINARY]


def test_repeated_names() -> None:
    parts = encode_and_parse(
        {"tag": ["a", "b"], "one": ("x",)},
        [("f", ("1.txt", b"1")), ("f", ("2.txt", b"2")), ("g", b"3"), ("f", ("3.txt", b"4"))],
    )
    assert [(p.params["name"], p.content) for p in parts] == [
        ("tag", b"a"), ("tag", b"b"), ("one", b"x"),
        ("f", b"1"), ("f", b"2"), ("g", b"3"), ("f", b"4")]


def test_bare_values_get_a_filename(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n")
    with path.open("rb") as handle:
        parts = encode_and_parse(None, {"file": handle, "bytes": b"x", "text": "y"})
    assert [(p.params.get("filename"), p.header("Content-Type")) for p in parts] == [
        ("report.csv", "text/csv"),
        ("upload", "application/octet-stream"),
        ("upload", "application/octet-stream"),
    ]
    assert [p.content for p in parts] == [b"a,b\n", b"x", b"y"]


def test_part_headers() -> None:
    parts = encode_and_parse(None, {
        "a": ("a.json", b"{}", None, {"X-Checksum": "abc", "Content-Type": "application/x"}),
        "b": ("b.json", b"{}", "application/json", {"Content-Type": "ignored/type"}),
    })
    assert parts[0].headers[1:] == [("Content-Type", "application/x"), ("X-Checksum", "abc")]
    assert parts[1].headers[1:] == [("Content-Type", "application/json")]


def test_empty_body() -> None:
    encoded = encode_multipart(None, None, boundary=b"b0undary")
    assert body_of(encoded) == b"--b0undary--\r\n"
    assert encoded.content_length == len(b"--b0undary--\r\n")
    assert encode_multipart({}, []).content_length is not None


def test_unpacks_as_a_tuple() -> None:
    content_type, stream, length = encode_multipart({"a": "b"}, None)
    assert content_type.startswith(b"multipart/form-data; boundary=")
    assert len(b"".join(stream)) == length


# -- lengths and streaming -------------------------------------------------------------------


class SpyFile(io.BytesIO):
    """A seekable binary file that records the size of every read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(size)
        return super().read(size)


class PipeLike(io.RawIOBase):
    """A readable, non-seekable stream of known bytes (like a pipe), in small reads."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data = data
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(self._step, len(buffer))
        chunk, self._data = self._data[:size], self._data[size:]
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_large_file_is_streamed_in_chunks(tmp_path: Path) -> None:
    size = 5 * 1024 * 1024 + 123
    path = tmp_path / "big.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    with path.open("rb") as handle:
        encoded = encode_multipart({"x": "y"}, {"big": ("big.bin", handle)})
        assert handle.tell() == 0  # nothing read at encoding
        peak = total = 0
        collected = bytearray()
        for chunk in encoded.stream:
            peak = max(peak, len(chunk))
            total += len(chunk)
            collected += chunk
    assert peak <= CHUNK_SIZE
    assert encoded.content_length == total
    [_, part] = parse(encoded.content_type, bytes(collected))
    assert part.content == data


def test_file_reads_are_bounded() -> None:
    spy = SpyFile(b"z" * (3 * CHUNK_SIZE + 5))
    encoded = encode_multipart(None, {"f": ("f", spy)})
    chunks = list(encoded.stream)
    assert spy.reads
    assert all(size is not None and 0 < size <= CHUNK_SIZE for size in spy.reads)
    assert max(len(chunk) for chunk in chunks[1:-1]) == CHUNK_SIZE
    assert encoded.content_length == sum(map(len, chunks))


@pytest.mark.parametrize("files", [
    {"a": b""},
    {"a": ("x.txt", "ü" * 100)},
    [("a", io.BytesIO(b"abc")), ("a", ("n", io.BytesIO(b"d" * 70000)))],
])
def test_content_length_is_exact(files: Any) -> None:
    encoded = encode_multipart({"k": ["v", "w"], "e": ""}, files)
    assert encoded.content_length == len(body_of(encoded))


def test_file_position_is_respected() -> None:
    handle = io.BytesIO(b"skip:keep")
    handle.seek(5)
    encoded = encode_multipart(None, {"f": ("f", handle)})
    [part] = parse(encoded.content_type, body_of(encoded))
    assert part.content == b"keep"
    assert encoded.content_length == len(body_of(encoded))  # replayed from position 5


def test_unknown_size_means_no_length() -> None:
    data = os.urandom(200_000)
    encoded = encode_multipart(None, {"f": ("f", io.BufferedReader(PipeLike(data)))})
    assert encoded.content_length is None
    assert not encoded.stream.replayable
    [part] = parse(encoded.content_type, body_of(encoded))
    assert part.content == data
    with pytest.raises(InvalidRequest, match="only once"):
        iter(encoded.stream)


def test_seekable_body_replays() -> None:
    encoded = encode_multipart({"a": "1"}, {"f": ("f", io.BytesIO(b"data" * 1000))})
    assert encoded.stream.replayable
    assert body_of(encoded) == body_of(encoded)


def test_a_file_that_shrinks_fails_and_one_that_grows_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345678")
    with path.open("rb") as handle:
        encoded = encode_multipart(None, {"f": handle})
        path.write_bytes(b"1234")
        with pytest.raises(InvalidRequest, match="ended 4 bytes before"):
            body_of(encoded)
    path.write_bytes(b"12")
    with path.open("rb") as handle:
        encoded = encode_multipart(None, {"f": handle})
        path.write_bytes(b"123456")
        body = body_of(encoded)
    assert len(body) == encoded.content_length
    assert parse(encoded.content_type, body)[0].content == b"12"


# -- the boundary ----------------------------------------------------------------------------


def test_boundary_is_random_and_absent_from_parts() -> None:
    boundaries = set()
    for _ in range(50):
        encoded = encode_multipart({"a": BINARY.decode("latin-1")}, {"b": ("b", BINARY)})
        boundary = boundary_of(encoded.content_type)
        assert re.fullmatch(rb"[0-9a-f]{32}", boundary)
        body = body_of(encoded)
        assert body.count(boundary) == 3
        boundaries.add(boundary)
    assert len(boundaries) == 50


def test_a_colliding_boundary_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    made = iter(["ab" * 16, "cd" * 16])
    monkeypatch.setattr("poolhttp._multipart.secrets.token_hex", lambda n: next(made))
    encoded = encode_multipart({"a": "ab" * 16}, None)
    assert boundary_of(encoded.content_type) == b"cd" * 16


def test_a_given_boundary_is_checked() -> None:
    with pytest.raises(InvalidRequest, match="occurs in the content"):
        encode_multipart({"a": "xx--B--xx"}, None, boundary=b"--B")
    with pytest.raises(InvalidRequest, match="occurs in the content"):
        encode_multipart(None, {"f": ("name-B", b"")}, boundary=b"-B")
    for bad in (b"", b"a b", b"a\r\n", b"x" * 71):
        with pytest.raises(InvalidRequest, match="invalid multipart boundary"):
            encode_multipart(None, None, boundary=bad)


# -- quoting and injection -------------------------------------------------------------------

EVIL = 'a"; filename="evil.exe"\r\nContent-Type: text/html\r\n\r\n<script>'


def test_names_cannot_inject_parameters_or_headers() -> None:
    encoded = encode_multipart({EVIL: "v"}, {"file": (EVIL, b"c"), EVIL: ("ok.txt", b"d")})
    body = body_of(encoded)
    assert b"<script>\r\n" not in body
    parts = parse(encoded.content_type, body)
    assert len(parts) == 3
    assert parts[0].params == {"name": EVIL}
    assert parts[1].params == {"name": "file", "filename": EVIL}
    assert parts[2].params == {"name": EVIL, "filename": "ok.txt"}
    assert [len(part.headers) for part in parts] == [1, 2, 2]


def test_quote_name() -> None:
    assert quote_name('say "hi"') == "say %22hi%22"
    assert quote_name("a\r\nb\x00\x7f\tc") == "a%0D%0Ab%00%7F%09c"
    assert quote_name("ünïcode ✓ \\ %") == "ünïcode ✓ \\ %"


@pytest.mark.parametrize("headers", [
    {"X-A": "b\r\nX-Injected: 1"}, {"Bad Name": "v"}, {"Content-Disposition": "attachment"}])
def test_bad_part_headers(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        encode_multipart(None, {"f": ("f", b"", None, headers)})


def test_content_type_cannot_inject() -> None:
    with pytest.raises(InvalidRequest, match="control character"):
        encode_multipart(None, {"f": ("f", b"", "text/plain\r\nX-Injected: 1")})


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "files", "message"), [
    ({"a": None}, None, "form field 'a' has a value of type NoneType"),
    ({"a": {"b": 1}}, None, "type dict"),
    ({"a": True}, None, "type bool"),
    ({1: "x"}, None, "field name must be a str"),
    (["a", "b"], None, "data must be a mapping"),
    (None, {"f": 12}, "file 'f' has content of type int"),
    (None, {"f": object()}, "content of type object"),
    (None, {"f": ("x",)}, "got 1 items"),
    (None, {"f": ("a", b"", None, {}, "extra")}, "got 5 items"),
    (None, {"f": (b"name", b"")}, "filename must be a str"),
    (None, {"f": ("a", b"", 3)}, "content type must be a str"),
    (None, {"f": ("a", b"", None, [("X", "y")])}, "headers must be a mapping"),
    (None, "not files", "files must be a mapping"),
    (None, ["f", b""], "(name, value) pairs"),
    (None, {"f": io.StringIO("text")}, "text mode"),
    (None, {"f": ("\ud800", b"")}, "not valid Unicode"),
])
def test_bad_input_is_named(data: Any, files: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        encode_multipart(data, files)


def test_text_mode_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("text")
    with path.open() as handle:
        text_file: Any = handle
        with pytest.raises(InvalidRequest, match="open it in binary mode"):
            encode_multipart(None, {"t": text_file})


def test_write_only_file_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "w").open("wb") as handle, pytest.raises(InvalidRequest, match="reading"):
        encode_multipart(None, {"w": handle})


def test_a_reader_returning_text_fails_when_iterated() -> None:
    class Sneaky:
        def read(self, size: int = -1) -> str:
            return "text"

        def seekable(self) -> bool:
            return False

    sneaky: Any = Sneaky()
    encoded = encode_multipart(None, {"f": ("f", sneaky)})
    with pytest.raises(InvalidRequest, match="open it in binary mode"):
        body_of(encoded)


# -- properties ------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=20).filter(lambda s: "%" not in s and not _surrogate(s))


def _surrogate(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _contents() -> st.SearchStrategy[Any]:
    return st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(io.BytesIO))


@settings(max_examples=150, deadline=None)
@given(
    fields=st.lists(st.tuples(names, st.text(max_size=50).filter(lambda s: not _surrogate(s))),
                    max_size=4),
    files=st.lists(st.tuples(names, st.one_of(names, st.none()), _contents()), max_size=4),
)
def test_round_trip_property(fields: list[tuple[str, str]],
                             files: list[tuple[str, str | None, Any]]) -> None:
    expected = [(name, None, value.encode()) for name, value in fields] + [
        (name, filename, content if isinstance(content, bytes) else content.getvalue())
        for name, filename, content in files]
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    ordered = [(name, None, value.encode()) for name, values in data.items() for value in values]
    expected = ordered + expected[len(fields):]
    encoded = encode_multipart(data, [(name, (fn, c)) for name, fn, c in files])
    body = body_of(encoded)
    assert encoded.content_length == len(body)
    got = [(p.params["name"], p.params.get("filename"), p.content)
           for p in parse(encoded.content_type, body)]
    assert got == expected

"""multipart/form-data request bodies (RFC 7578), encoded without I/O of their own.

`encode_multipart(data, files)` turns form fields and files into the Content-Type value, an
iterable of body chunks and the body's length when it is known:

>>> encoded = encode_multipart({"a": "1"}, {"f": ("hi.txt", b"hello")}, boundary=b"XyZ")
>>> encoded.content_type
b'multipart/form-data; boundary=XyZ'
>>> body = b"".join(encoded.stream)
>>> print(body.decode().replace("\\r\\n", "|"))
--XyZ|Content-Disposition: form-data; name="a"||1|--XyZ|Content-Disposition: form-data; \
name="f"; filename="hi.txt"|Content-Type: text/plain||hello|--XyZ--|
>>> encoded.content_length == len(body)
True

Fields (`data`): a mapping of names to str values (bytes, int and float are accepted too); a
list or tuple value repeats the field. They are sent as UTF-8 text with no Content-Type.

Files: a mapping of names to values, or a list of (name, value) pairs where a name may repeat.
A value is one of

* the content alone: bytes, str (sent as UTF-8) or a binary file object;
* `(filename, content)`, `(filename, content, content_type)` or
  `(filename, content, content_type, headers)`; `filename` may be None (then the part has no
  filename), `content_type` None (then it is guessed from the filename with `mimetypes`,
  "application/octet-stream" when that fails), `headers` a mapping of extra part headers
  (a Content-Type there is used when `content_type` is None).

A bare value gets the file object's base name (its `name` attribute) as filename, or
"upload". File objects are read when the stream is iterated, 64 KiB at a time, never whole;
text-mode files are refused. A seekable file is read from where it stood at encoding, again
at every iteration, so the stream can be sent twice (`MultipartStream.replayable`).

Length: `content_length` is the exact body size when every file's remaining size is known
(seekable files: os.fstat or seek/tell), else None and the body goes out chunked. A file whose
size was promised must deliver exactly that many bytes: a shorter one fails the iteration
(InvalidRequest), and a longer one is read only up to that size, so the framing never lies.

Boundary: 32 hex digits from `secrets` (128 random bits). It is checked not to occur in any
part held in memory (fields, bytes and str contents, part headers). File contents are not
scanned (that would read them twice): the chance that 128 random bits appear in a file by
accident is about n / 2**128 for n bytes, and someone who can see the boundary already
controls the request.

Names and filenames are quoted the way browsers do (the HTML standard's form encoding, which
RFC 7578 section 4.2 defers to in practice): UTF-8 as is, `"` -> %22, CR -> %0D, LF -> %0A,
and, beyond the browsers, every other control character as %XX, so no name can end the header
line or the quoted string.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, cast

from ._exceptions import InvalidRequest
from ._headers import encode_header_pairs

__all__ = ["CHUNK_SIZE", "FileTypes", "FilesTypes", "MultipartEncoding", "MultipartStream",
           "encode_multipart"]

CHUNK_SIZE = 64 * 1024

FileContent = bytes | str | IO[bytes]
FileTypes = (
    FileContent
    | tuple[str | None, FileContent]
    | tuple[str | None, FileContent, str | None]
    | tuple[str | None, FileContent, str | None, Mapping[str, str]]
)
FilesTypes = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]

_BOUNDARY_OK = re.compile(rb"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
_QUOTE_RE = re.compile(r'["\x00-\x1f\x7f]')


class MultipartEncoding(NamedTuple):
    """What `encode_multipart` returns; unpacks as (content_type, stream, content_length)."""

    content_type: bytes  # the Content-Type header value, boundary included
    stream: MultipartStream  # the body, as an iterable of bytes chunks
    content_length: int | None  # the body's exact size, or None (send it chunked)


@dataclass
class _FilePart:
    file: IO[bytes]
    start: int | None  # where a seekable file stood at encoding; None if not seekable
    size: int | None  # bytes to send from `start`, None when unknown


_Body = bytes | _FilePart


class MultipartStream:
    """The encoded body: iterate it for the chunks (none larger than 64 KiB of file data
    plus the part's headers, or one in-memory part)."""

    def __init__(self, boundary: bytes, parts: list[tuple[bytes, _Body]]) -> None:
        self.boundary = boundary
        self._parts = parts
        self._iterated = False

    @property
    def replayable(self) -> bool:
        """Whether iterating again yields the same body (no non-seekable file part)."""
        return all(not isinstance(body, _FilePart) or body.start is not None
                   for _, body in self._parts)

    def __iter__(self) -> Iterator[bytes]:
        if self._iterated and not self.replayable:
            raise InvalidRequest("this multipart body has a file that cannot be rewound; it "
                                 "can be sent only once")
        self._iterated = True
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        delimiter = b"--" + self.boundary + b"\r\n"
        pending = b""  # the CRLF ending the previous part
        for head, body in self._parts:
            if isinstance(body, bytes):
                yield pending + delimiter + head + body
            else:
                yield pending + delimiter + head
                yield from _read_file(body)
            pending = b"\r\n"
        yield pending + b"--" + self.boundary + b"--\r\n"

    def __repr__(self) -> str:
        return f"<MultipartStream boundary={self.boundary.decode('ascii')!r} " \
               f"parts={len(self._parts)}>"


def _read_file(part: _FilePart) -> Iterator[bytes]:
    if part.start is not None:
        part.file.seek(part.start)
    remaining = part.size
    while remaining is None or remaining > 0:
        want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
        chunk = part.file.read(want)
        if not isinstance(chunk, bytes):
            raise InvalidRequest(f"file {_file_label(part.file)} returned "
                                 f"{type(chunk).__name__}, not bytes: open it in binary mode")
        if not chunk:
            if remaining is not None:
                raise InvalidRequest(
                    f"file {_file_label(part.file)} ended {remaining} bytes before the size "
                    f"it had when the body was encoded ({part.size} bytes)")
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def encode_multipart(data: Mapping[str, Any] | None, files: FilesTypes | None, *,
                     boundary: bytes | None = None) -> MultipartEncoding:
    """Encode form fields and files as multipart/form-data (see the module's docs).

    `boundary` is for tests; by default a random one is made. Raises `InvalidRequest`
    naming the field for a value of an unsupported type, a text-mode file, a malformed
    file tuple, or a given boundary that is invalid or occurs in the content.
    """
    parts = [*_field_parts(data), *_file_parts(files)]
    memory = [head for head, _ in parts] + [body for _, body in parts if isinstance(body, bytes)]
    if boundary is None:
        boundary = _random_boundary(memory)
    elif not isinstance(boundary, bytes) or not _BOUNDARY_OK.fullmatch(boundary):
        raise InvalidRequest(f"invalid multipart boundary {boundary!r}")
    elif any(boundary in piece for piece in memory):
        raise InvalidRequest(f"the multipart boundary {boundary!r} occurs in the content")
    stream = MultipartStream(boundary, parts)
    return MultipartEncoding(b"multipart/form-data; boundary=" + boundary, stream,
                             _content_length(boundary, parts))


def _random_boundary(memory: list[bytes]) -> bytes:
    while True:  # a collision is a 2**-128 event per position; never loops in practice
        boundary = secrets.token_hex(16).encode("ascii")
        if not any(boundary in piece for piece in memory):
            return boundary


def _content_length(boundary: bytes, parts: list[tuple[bytes, _Body]]) -> int | None:
    total = len(boundary) + 6  # "--" boundary "--" CRLF
    for head, body in parts:
        size = len(body) if isinstance(body, bytes) else body.size
        if size is None:
            return None
        total += len(boundary) + 4 + len(head) + size + 2  # "--" boundary CRLF head body CRLF
    return total


# -- fields ----------------------------------------------------------------------------------


def _field_parts(data: Mapping[str, Any] | None) -> Iterator[tuple[bytes, _Body]]:
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise InvalidRequest(f"data must be a mapping of field names to values, not "
                             f"{type(data).__name__}")
    for name, value in data.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            yield _disposition(name, None) + b"\r\n", _field_value(name, item)


def _field_value(name: str, value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise InvalidRequest(f"form field {name!r} has a value of type {type(value).__name__}; "
                         "expected str, bytes, int, float or a list of them")


# -- files -----------------------------------------------------------------------------------


def _file_parts(files: FilesTypes | None) -> Iterator[tuple[bytes, _Body]]:
    if files is None:
        return
    if isinstance(files, Mapping):
        items: Sequence[Any] = list(files.items())
    elif isinstance(files, (list, tuple)):
        items = files
    else:
        raise InvalidRequest(f"files must be a mapping or a list of (name, value) pairs, not "
                             f"{type(files).__name__}")
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise InvalidRequest(f"files must hold (name, value) pairs, got {item!r}")
        yield _file_part(*item)


def _file_part(name: str, value: Any) -> tuple[bytes, _Body]:
    filename, content, content_type, headers = _unpack_file(name, value)
    body = _file_body(name, content)
    extra = encode_header_pairs(headers)
    if any(key.lower() == b"content-disposition" for key, _ in extra):
        raise InvalidRequest(f"file {name!r}: Content-Disposition is set by the encoder")
    if content_type is None:
        given = [v for key, v in extra if key.lower() == b"content-type"]
        content_type = given[0].decode("latin-1") if given else _guess_type(filename)
    extra = [(key, v) for key, v in extra if key.lower() != b"content-type"]
    head = _disposition(name, filename) + _header_line(name, b"Content-Type", content_type)
    head += b"".join(key + b": " + v + b"\r\n" for key, v in extra)
    return head + b"\r\n", body


def _unpack_file(name: str, value: Any) -> tuple[str | None, Any, str | None, Any]:
    if not isinstance(value, tuple):
        return _default_filename(value), value, None, None
    if not 2 <= len(value) <= 4:
        raise InvalidRequest(f"file {name!r}: a tuple must be (filename, content"
                             f"[, content_type[, headers]]), got {len(value)} items")
    filename, content, content_type, headers = (*value, None, None)[:4]
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequest(f"file {name!r}: filename must be a str or None, not "
                             f"{type(filename).__name__}")
    if content_type is not None and not isinstance(content_type, str):
        raise InvalidRequest(f"file {name!r}: content type must be a str or None, not "
                             f"{type(content_type).__name__}")
    if headers is not None and not isinstance(headers, Mapping):
        raise InvalidRequest(f"file {name!r}: headers must be a mapping, not "
                             f"{type(headers).__name__}")
    return filename, content, content_type, headers


def _default_filename(content: object) -> str:
    name = getattr(content, "name", None)
    if isinstance(name, str) and os.path.basename(name):
        return os.path.basename(name)
    return "upload"


def _guess_type(filename: str | None) -> str:
    guessed = mimetypes.guess_type(filename)[0] if filename else None
    return guessed or "application/octet-stream"


def _file_body(name: str, content: object) -> _Body:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    mode = getattr(content, "mode", "b")
    if isinstance(content, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
        raise InvalidRequest(f"file {name!r} is open in text mode; open it in binary mode "
                             "('rb') so its bytes are sent as they are")
    if not callable(getattr(content, "read", None)):
        raise InvalidRequest(f"file {name!r} has content of type {type(content).__name__}; "
                             "expected bytes, str or a binary file object")
    file = cast(IO[bytes], content)
    readable = getattr(file, "readable", None)
    if callable(readable) and not readable():
        raise InvalidRequest(f"file {name!r} is not open for reading")
    return _measure(file)


def _measure(file: IO[bytes]) -> _FilePart:
    """The file's position and remaining size, when it can tell them."""
    try:
        if not file.seekable():
            return _FilePart(file, None, None)
        start = file.tell()
    except (AttributeError, OSError, ValueError):
        return _FilePart(file, None, None)
    try:
        info = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        info = None
    if info is not None and stat.S_ISREG(info.st_mode):
        return _FilePart(file, start, max(0, info.st_size - start))
    end = file.seek(0, io.SEEK_END)
    file.seek(start)
    return _FilePart(file, start, max(0, end - start))


def _file_label(file: IO[bytes]) -> str:
    name = getattr(file, "name", None)
    return repr(name) if isinstance(name, str) else f"object {type(file).__name__}"


# -- quoting ---------------------------------------------------------------------------------


def quote_name(value: str) -> str:
    """`value` ready to sit between double quotes in Content-Disposition.

    >>> quote_name('a"b\\r\\nc')
    'a%22b%0D%0Ac'
    """
    return _QUOTE_RE.sub(lambda match: f"%{ord(match.group()):02X}", value)


def _disposition(name: object, filename: str | None) -> bytes:
    if not isinstance(name, str):
        raise InvalidRequest(f"a multipart field name must be a str, not {type(name).__name__}")
    line = f'Content-Disposition: form-data; name="{quote_name(name)}"'
    if filename is not None:
        line += f'; filename="{quote_name(filename)}"'
    try:
        return line.encode("utf-8") + b"\r\n"
    except UnicodeEncodeError:
        raise InvalidRequest(f"multipart field {name!r} or its filename is not valid "
                             "Unicode text (a lone surrogate)") from None


def _header_line(name: str, key: bytes, value: str) -> bytes:
    if _QUOTE_RE.search(value.replace('"', "")):
        raise InvalidRequest(f"file {name!r}: content type {value!r} holds a control character")
    return key + b": " + value.encode("utf-8", "replace") + b"\r\n"

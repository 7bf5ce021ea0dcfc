"""Headers: case-insensitive, multi-valued, kept as the bytes that crossed the wire.

Response headers arrive from the parser as one raw header block; `Headers.from_block` splits it
into (name, value) bytes pairs, and the response calls it only when somebody reads its headers.
The lower-cased index is built the first time a header is looked up, so a response whose
headers nobody reads costs nothing to split or decode.

Text is latin-1 both ways (the HTTP/1.1 convention): a str is encoded as latin-1 on the way in
and the bytes are decoded as latin-1 on the way out, so a str value reads back as given; one
that latin-1 cannot encode is refused (see `Headers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Union

from ._exceptions import InvalidRequest

if TYPE_CHECKING:
    from ._models import Request

__all__ = ["HeaderTypes", "Headers", "check_trailers", "encode_header_pairs",
           "split_header_block", "trailer_pairs"]

HeaderTypes = Union[
    "Headers",
    Mapping[str, str],
    Mapping[bytes, bytes],
    Iterable[tuple[str, str]],
    Iterable[tuple[bytes, bytes]],
]

# RFC 9110 token characters for names; values may hold visible ASCII, spaces, tabs and
# obs-text, but never CR, LF or NUL (request smuggling / header injection).
_NAME_OK = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_BAD = re.compile(rb"[\x00\r\n]")


def _to_bytes(value: str | bytes, what: str, name: str | bytes) -> bytes:
    """`value` (the header's name or its value) as latin-1 bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            if what == "name":
                raise InvalidRequest(f"invalid header name {name!r}") from None
            raise InvalidRequest(
                f"header {name!r} has a value that is not latin-1 text: {value!r}; header "
                "values are latin-1, so pass bytes to send another encoding (for instance "
                "value.encode('utf-8'))") from None
    raise InvalidRequest(f"header {what} must be str or bytes, not {type(value).__name__}")


def encode_header_pairs(headers: HeaderTypes | None) -> list[tuple[bytes, bytes]]:
    """Validate user-supplied headers and return them as (name, value) bytes pairs.

    Raises `InvalidRequest` naming the header for an empty or non-token name, for a value
    holding CR, LF or NUL, and for a str value with a character latin-1 cannot encode.
    """
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return list(headers.raw)
    items: Iterable[tuple[str | bytes, str | bytes]]
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise InvalidRequest(f"headers must be (name, value) pairs, got {item!r}") from None
        raw_name = _to_bytes(name, "name", name).strip()
        raw_value = _to_bytes(value, "value", name).strip(b" \t")
        if not _NAME_OK.fullmatch(raw_name):
            raise InvalidRequest(f"invalid header name {name!r}")
        if _VALUE_BAD.search(raw_value):
            raise InvalidRequest(f"header {name!r} has a CR, LF or NUL in its value")
        pairs.append((raw_name, raw_value))
    return pairs


class Headers(MutableMapping[str, str]):
    """Case-insensitive, multi-valued HTTP headers.

    `headers["name"]` joins repeated values with ", "; `get_list("name")` returns each one.
    Iteration yields lower-cased names, once each.

    Names and values are kept as bytes (`raw`). A str is encoded as latin-1 and bytes are read
    back as latin-1, so any latin-1 text round-trips; a str value holding a character outside
    latin-1 (a euro sign, emoji) raises `InvalidRequest`: pass bytes to choose another encoding,
    and decode `raw` to read it the same way.

    >>> h = Headers([("X-Name", "caf\\u00e9")])
    >>> h.raw, h["x-name"] == "caf\\u00e9"
    ([(b'X-Name', b'caf\\xe9')], True)

    >>> h = Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("Content-Type", "text/html")])
    >>> h["content-type"], h.get_list("SET-COOKIE")
    ('text/html', ['a=1', 'b=2'])
    """

    __slots__ = ("_index", "raw")

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        #: The (name, value) bytes pairs, in order, as sent or received.
        self.raw: list[tuple[bytes, bytes]] = encode_header_pairs(headers)
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def from_raw(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        """Wrap parser output without validation (the parser already enforced the grammar)."""
        headers = cls.__new__(cls)
        headers.raw = raw
        headers._index = None
        return headers

    @classmethod
    def from_block(cls, block: bytes) -> Headers:
        """The headers of a header block the parser validated: CRLF-separated `name:value`
        lines (no obs-fold, no whitespace before the colon, no final CRLF). Values lose their
        surrounding blanks; nothing else is checked.

        >>> Headers.from_block(b"Server: nginx\\r\\nVia:a\\r\\nvia:  b ").raw
        [(b'Server', b'nginx'), (b'Via', b'a'), (b'via', b'b')]
        """
        return cls.from_raw(split_header_block(block))

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in self.raw:
            index.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self._index = index
        return index

    def get_list(self, name: str) -> list[str]:
        """Every value of `name`, in order; [] when absent."""
        index = self._index if self._index is not None else self._build_index()
        return list(index.get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        index = self._index if self._index is not None else self._build_index()
        try:
            return ", ".join(index[name.lower()])
        except KeyError:
            raise KeyError(name) from None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index if self._index is not None else self._build_index()
        return name.lower() in index

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every value of `name` with `value`."""
        pair = encode_header_pairs([(name, value)])[0]
        lowered = pair[0].lower()
        self.raw = [p for p in self.raw if p[0].lower() != lowered] + [pair]
        self._index = None

    def add(self, name: str, value: str) -> None:
        """Append a value, keeping any that `name` already has."""
        self.raw = [*self.raw, encode_header_pairs([(name, value)])[0]]
        self._index = None

    def __delitem__(self, name: str) -> None:
        try:
            lowered = name.lower().encode("latin-1")
        except UnicodeEncodeError:  # not latin-1, so no header is named that
            raise KeyError(name) from None
        kept = [p for p in self.raw if p[0].lower() != lowered]
        if len(kept) == len(self.raw):
            raise KeyError(name)
        self.raw = kept
        self._index = None

    def __iter__(self) -> Iterator[str]:
        index = self._index if self._index is not None else self._build_index()
        return iter(index)

    def __len__(self) -> int:
        index = self._index if self._index is not None else self._build_index()
        return len(index)

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order, names lower-cased, repeats kept."""
        return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in self.raw]

    def copy(self) -> Headers:
        return Headers.from_raw(list(self.raw))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self.multi_items()) == sorted(other.multi_items())
        if isinstance(other, Mapping):
            return dict(self.items()) == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        """Credentials (Authorization, Proxy-Authorization, Cookie, Set-Cookie) show as
        "[secure]": a repr ends up in logs and tracebacks."""
        items = [(name, "[secure]" if name.lower() in _SECRET else value)
                 for name, value in self.multi_items()]
        return f"Headers({items!r})"


_SECRET = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def split_header_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a header block llhttp validated: CRLF-separated lines of
    `name:value`, names without whitespace, no obs-fold. Values lose surrounding blanks."""
    if not block:
        return []
    pairs = []
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        pairs.append((name, value.strip(b" \t")))
    return pairs


# Fields a sender must not put in trailers (RFC 9110 6.5.1): framing, routing, request
# modifiers, authentication, and what processing the content depends on.
_NOT_IN_TRAILERS = frozenset({
    b"transfer-encoding", b"content-length", b"host", b"connection", b"keep-alive", b"te",
    b"trailer", b"upgrade", b"proxy-connection", b"cache-control", b"expect", b"max-forwards",
    b"pragma", b"range", b"if-match", b"if-none-match", b"if-modified-since",
    b"if-unmodified-since", b"if-range", b"authorization", b"proxy-authorization", b"cookie",
    b"set-cookie", b"content-encoding", b"content-type", b"content-range"})


def check_trailers(trailers: HeaderTypes) -> list[tuple[bytes, bytes]]:
    """Trailer fields as validated pairs; InvalidRequest naming a field that may not be a
    trailer or a malformed one."""
    pairs = encode_header_pairs(trailers)
    for name, _ in pairs:
        if name.lower() in _NOT_IN_TRAILERS:
            raise InvalidRequest(f"{name.decode('latin-1')!r} may not be sent as a trailer "
                                 "field (RFC 9110 6.5.1): send it as a header")
    return pairs


def trailer_pairs(request: Request) -> list[tuple[bytes, bytes]]:
    """The request's trailer fields, now: a callable is called (once the body has been
    sent, by the connection that sends them) and what it returns checked."""
    trailers = request.trailers
    if trailers is None:
        return []
    if callable(trailers):
        try:
            made = trailers()
        except Exception as exc:
            raise InvalidRequest(f"the trailers callable raised {type(exc).__name__}: "
                                 f"{exc}") from exc
        return check_trailers(made) if made is not None else []
    return trailers

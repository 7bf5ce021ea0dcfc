"""URL and Origin: parsed once, validated once, cached.

A URL string seen before costs one dict look-up: the parsed `URL` (with its `Origin` and the
request-target bytes) is kept in a bounded cache. The pool keys connections by `Origin.key`, a
plain string such as "http://127.0.0.1:8080", whose hash Python caches inside the string.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

from ._exceptions import InvalidURL

__all__ = ["URL", "Origin", "QueryParams"]

DEFAULT_PORTS = {"http": 80, "https": 443}

# Characters left as they are in a path / query; everything else outside printable ASCII, and
# spaces, is percent-encoded the way browsers do. Existing %XX escapes are kept.
_PATH_SAFE = "/:@!$&'()*+,;=%-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9/:@!$&'()*+,;=%\-._~?]")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")  # CR, LF, NUL and other controls: header injection
_HOST_OK = re.compile(r"[A-Za-z0-9.\-_]+")

QueryParamValue = str | int | float | bool | None
QueryParams = (
    Mapping[str, QueryParamValue | Sequence[QueryParamValue]]
    | Sequence[tuple[str, QueryParamValue]]
    | str
    | bytes
)


class Origin:
    """(scheme, host, port): what a pooled connection is bound to.

    `key` is the canonical string form, "scheme://host:port" with the port always given and IPv6
    hosts in brackets; it is what `PoolStats.per_host` is keyed by. `host_header` leaves a
    default port out.

    >>> Origin("https", "::1", 443).key, Origin("https", "::1", 443).host_header
    ('https://[::1]:443', '[::1]')
    >>> Origin("http", "example.com", 8080).host_header
    'example.com:8080'
    """

    __slots__ = ("host", "host_header", "is_tls", "key", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        default_port = DEFAULT_PORTS.get(scheme)
        if default_port is None:
            raise InvalidURL(f"unsupported scheme {scheme!r} for an Origin (poolhttp speaks "
                             "http and https, written in lower case)")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
            raise InvalidURL(f"invalid port {port!r} for an Origin (1 to 65535)")
        self.scheme = scheme
        self.host = host  # IPv6 literals without brackets, as socket functions want them
        self.port = port
        self.is_tls = scheme == "https"
        netloc = f"[{host}]" if ":" in host else host
        self.key = f"{scheme}://{netloc}:{port}"
        self.host_header = netloc if port == default_port else f"{netloc}:{port}"

    def __str__(self) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"Origin({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Origin) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


class URL:
    """An absolute http(s) URL, validated and normalised for sending.

    >>> u = URL("http://example.com:8080/a b?q=1#frag")
    >>> u.host, u.port, u.target
    ('example.com', 8080, b'/a%20b?q=1')
    >>> str(u.origin)
    'http://example.com:8080'
    """

    __slots__ = ("_str", "fragment", "origin", "path", "query", "target", "userinfo")

    _str: str
    fragment: str
    origin: Origin
    path: str
    query: str
    target: bytes  # the request-target sent on the request line: path and query, encoded
    userinfo: str

    def __init__(self, url: str | URL) -> None:
        if isinstance(url, URL):
            for name in URL.__slots__:
                setattr(self, name, getattr(url, name))
            return
        if not isinstance(url, str):
            raise InvalidURL(f"a URL must be a str, not {type(url).__name__}", url=repr(url))
        _parse_into(self, url)

    # -- derived views -------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return self.origin.scheme

    @property
    def host(self) -> str:
        return self.origin.host

    @property
    def port(self) -> int:
        return self.origin.port

    @property
    def raw_path(self) -> str:
        """Path plus query, as sent on the request line."""
        return self.target.decode("ascii")

    def copy_with_params(self, params: QueryParams | None) -> URL:
        """This URL with `params` appended to its query string; the fragment is kept.

        >>> URL("http://example.com/search?q=1#top").copy_with_params({"page": 2, "debug": None})
        URL('http://example.com/search?q=1&page=2#top')
        """
        if not params:
            return self
        extra = encode_params(params)
        query = f"{self.query}&{extra}" if self.query else extra
        fragment = f"#{self.fragment}" if self.fragment else ""
        return URL(f"{self.origin.scheme}://{self._netloc()}{self.path}?{query}{fragment}")

    def join(self, url: str) -> URL:
        """Resolve `url` against this URL the way `base_url` does (see AsyncClient): a
        relative `url` extends this URL's path, an absolute one replaces it.

        >>> URL("http://example.com/api/").join("/users?page=2")
        URL('http://example.com/api/users?page=2')
        >>> URL("http://example.com/api/").join("https://other.example/")
        URL('https://other.example/')
        """
        if _SCHEME_RE.match(url):
            return URL(url)
        base = f"{self.origin.scheme}://{self._netloc()}{self.path.rstrip('/')}"
        if url and not url.startswith(("/", "?")):
            url = "/" + url
        return URL(base + url)

    def resolve(self, reference: str) -> URL:
        """The target of `reference` (a redirect's Location, say) taken relative to this URL,
        by the rules of RFC 3986 section 5.2: an absolute reference replaces it, `//host/...`
        keeps the scheme, `/path` keeps the authority, `?q` keeps the path, anything else is
        merged with this URL's path, and dot segments are removed.

        >>> URL("http://a/b/c/d;p?q").resolve("../g")
        URL('http://a/b/g')
        >>> URL("http://a/b/c/d;p?q").resolve("//g/x")
        URL('http://g/x')
        >>> URL("http://a/b/c/d;p?q").resolve("?y")
        URL('http://a/b/c/d;p?y')
        """
        if _ANY_SCHEME_RE.match(reference):
            scheme, rest = reference.split(":", 1)
            if rest.startswith("//"):
                return URL(reference)
            if scheme.lower() != self.origin.scheme:
                raise InvalidURL(f"unsupported URL scheme {scheme.lower()!r} in {reference!r} "
                                 "(poolhttp speaks http and https)", url=reference)
            return self.resolve(rest)  # "http:g": the same scheme, a relative reference
        reference, _, fragment = reference.partition("#")
        fragment = f"#{fragment}" if _ else ""
        scheme = self.origin.scheme
        if reference.startswith("//"):
            authority, slash, rest = reference[2:].partition("/")
            return URL(f"{scheme}://{authority}{_remove_dots(slash + rest)}{fragment}")
        path, _, query = reference.partition("?")
        query = f"?{query}" if _ else ""
        if not path:
            path = self.path
            if not query:
                query = f"?{self.query}" if self.query else ""
        elif path.startswith("/"):
            path = _remove_dots(path)
        else:
            base = self.path[:self.path.rfind("/") + 1] if "/" in self.path else "/"
            path = _remove_dots(base + path)
        return URL(f"{scheme}://{self._netloc()}{path}{query}{fragment}")

    def _netloc(self) -> str:
        host = self.origin.host_header
        return f"{self.userinfo}@{host}" if self.userinfo else host

    def __str__(self) -> str:
        return self._str

    def __format__(self, spec: str) -> str:
        """In f-strings (messages, logs) a password in the userinfo shows as "[secure]";
        `str(url)` is the URL itself."""
        return format(self.redacted, spec)

    @property
    def redacted(self) -> str:
        """The URL with the password of its userinfo, if any, replaced by "[secure]".

        >>> URL("https://ada:s3cret@example.com/x").redacted
        'https://ada:[secure]@example.com/x'
        """
        if ":" not in self.userinfo:
            return self._str
        user = self.userinfo.split(":", 1)[0]
        return self._str.replace(f"//{self.userinfo}@", f"//{user}:[secure]@", 1)

    def __repr__(self) -> str:
        return f"URL({self.redacted!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, URL):
            return bool(other._str == self._str)
        if isinstance(other, str):
            return bool(other == self._str)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._str)


_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ANY_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")  # mailto:, ftp:, http:x


def _remove_dots(path: str) -> str:
    """RFC 3986 section 5.2.4: the path without "." and ".." segments."""
    if "." not in path:
        return path or "/"
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    joined = "/".join(output)
    if path.startswith("/") and not joined.startswith("/"):
        joined = "/" + joined
    return joined or "/"


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/?#@:]*):[^/?#@]*@")


def _redact(text: str) -> str:
    """`text` with the password of a userinfo, if any, replaced by "[secure]"."""
    return _USERINFO_PASSWORD.sub(r"\1:[secure]@", text, count=1)


# The URLs of nearly every request: http(s), a plain host name or IPv4 address, a port in
# range, a path and query that need no quoting, no userinfo, no fragment. For these the general
# parse below would find exactly the same parts, so they are taken from one match: a third of
# the time (urlsplit, the redaction of messages never shown, the host's checks).
# tests/unit/test_urls.py compares both on random URLs.
_SIMPLE_URL = re.compile(r"(https?)://([A-Za-z0-9.\-_]+)(?::([0-9]{1,5}))?"
                         r"(/[A-Za-z0-9/:@!$&'()*+,;=%\-._~]*)?"
                         r"(?:\?([A-Za-z0-9/:@!$&'()*+,;=%\-._~?]*))?")


def _parse_into(url: URL, text: str) -> None:
    simple = _SIMPLE_URL.fullmatch(text)
    if simple is not None:
        scheme, host, port_text, path, query = simple.groups()
        port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
        if 0 < port < 65536:
            origin = _intern_origin(scheme, host.lower(), port)
            path = path or "/"
            url.origin = origin
            url.path = path
            url.query = query = query or ""
            url.fragment = url.userinfo = ""
            target = f"{path}?{query}" if query else path
            url.target = target.encode("ascii")
            url._str = f"{scheme}://{origin.host_header}{target}"
            return
    _parse_general(url, text)


def _parse_general(url: URL, text: str) -> None:
    shown = _redact(text)  # what messages quote: never a password
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        raise InvalidURL(f"URL contains a control character ({bad.group()!r} at position "
                         f"{bad.start()}): {shown!r}", url=shown)
    if not _SCHEME_RE.match(text):
        other = _ANY_SCHEME_RE.match(text)
        scheme = other.group(0)[:-1].lower() if other else ""
        after = text[len(scheme) + 1:len(scheme) + 2]
        if other and scheme not in DEFAULT_PORTS and not after.isdigit():  # not host:port
            raise InvalidURL(f"unsupported URL scheme {scheme!r} in {shown!r} "
                             "(poolhttp speaks http and https)", url=shown)
        raise InvalidURL(f"URL has no scheme (expected http:// or https://): {shown!r}",
                         url=shown)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {shown!r}: {exc}", url=shown) from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"unsupported URL scheme {scheme!r} in {shown!r} "
                         "(poolhttp speaks http and https)", url=shown)
    if port == 0:  # urlsplit takes 0 to 65535; nothing listens on port 0
        raise InvalidURL(f"invalid port 0 in URL {shown!r} (1 to 65535)", url=shown)
    host = _normalise_host(parts.hostname or "", shown)
    origin = _intern_origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])
    path = parts.path or "/"
    if _NEEDS_QUOTING.search(path):
        path = quote(path, safe=_PATH_SAFE)
    query = parts.query
    if query and _NEEDS_QUOTING.search(query):
        query = quote(query, safe=_QUERY_SAFE)
    url.origin = origin
    url.path = path
    url.query = query
    url.fragment = parts.fragment
    netloc = parts.netloc
    url.userinfo = netloc.rpartition("@")[0] if "@" in netloc else ""
    target = f"{path}?{query}" if query else path
    url.target = target.encode("ascii")
    userinfo = f"{url.userinfo}@" if url.userinfo else ""
    frag = f"#{parts.fragment}" if parts.fragment else ""
    url._str = f"{scheme}://{userinfo}{origin.host_header}{target}{frag}"


def _normalise_host(host: str, text: str) -> str:
    if not host:
        raise InvalidURL(f"URL has no host: {text!r}", url=text)
    if ":" in host:  # urlsplit already removed the brackets of an IPv6 literal
        try:
            return str(ipaddress.IPv6Address(host.split("%", 1)[0])) + (
                "%" + host.split("%", 1)[1] if "%" in host else "")
        except ValueError as exc:
            raise InvalidURL(f"invalid IPv6 address in URL {text!r}", url=text) from exc
    if _HOST_OK.fullmatch(host):
        return host.lower()
    try:
        encoded = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise InvalidURL(f"invalid host name {host!r} in URL {text!r}", url=text) from exc
    if not _HOST_OK.fullmatch(encoded):  # the idna codec lets spaces and punctuation through
        raise InvalidURL(f"invalid host name {host!r} in URL {text!r}", url=text)
    return encoded


_ORIGINS: dict[tuple[str, str, int], Origin] = {}


def _intern_origin(scheme: str, host: str, port: int) -> Origin:
    """One Origin object per distinct origin while the table is small (bounded)."""
    key = (scheme, host, port)
    origin = _ORIGINS.get(key)
    if origin is None:
        if len(_ORIGINS) >= 4096:
            _ORIGINS.clear()
        origin = _ORIGINS[key] = Origin(scheme, host, port)
    return origin


_URL_CACHE: dict[str, URL] = {}
_URL_CACHE_MAX = 2048


def parse_url(text: str) -> URL:
    """`URL(text)`, cached: the hot path for clients that call the same URLs again and again.

    >>> parse_url("http://example.com/a") is parse_url("http://example.com/a")
    True
    """
    url = _URL_CACHE.get(text)
    if url is None:
        url = URL(text)
        if len(_URL_CACHE) >= _URL_CACHE_MAX:
            _URL_CACHE.clear()  # simpler and cheaper than LRU; a bulk crawl just misses
        _URL_CACHE[text] = url
    return url


def encode_params(params: QueryParams) -> str:
    """Encode query parameters; None values are dropped, sequences repeat the key. A str or
    bytes is taken as an encoded query string (bytes must be ASCII).

    >>> encode_params({"tag": ["a", "b"], "page": 2, "draft": False, "skip": None})
    'tag=a&tag=b&page=2&draft=false'
    """
    if isinstance(params, bytes):
        try:
            return params.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidURL(f"query parameters given as bytes must be ASCII (percent-encode "
                             f"the rest): {params!r}", url=None) from None
    if isinstance(params, str):
        return params.lstrip("?")
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((str(key), str(item)))
    return urlencode(pairs)

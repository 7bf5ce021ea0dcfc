"""Cookies: the client's jar, on the standard library's `http.cookiejar`.

`http.cookiejar` implements the rules a jar must follow (domain and path matching, `secure`,
`Expires` and `Max-Age`, never sending a cookie to a domain that did not set it) and is well
kept, so poolhttp uses it instead of writing them again. `Cookies` adds a dict-like view and
the two adapters the jar needs: it reads requests and responses through the small interface of
`urllib.request.Request` and `http.client.HTTPResponse`.

A cookie set through the dict view (`client.cookies["session"] = "x"`, or `cookies=` as a
dict) has no domain: it goes with every request of that client (or that request), to any
host, as an explicit setting of the user's. Cookies a server sets keep to the domain and path
rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Union

from ._exceptions import InvalidRequest

if TYPE_CHECKING:
    from http.cookiejar import CookieJar

    from ._models import Request, Response

__all__ = ["CookieTypes", "Cookies"]

CookieTypes = Union["Cookies", "CookieJar", Mapping[str, str], Iterable[tuple[str, str]]]

_SET_COOKIE = re.compile(rb"(?im)^set-cookie:")
_BAD_VALUE = re.compile(r"[\x00-\x1f\x7f;]")
_BAD_NAME = re.compile(r"[\x00-\x20\x7f()<>@,;:\\\"/\[\]?={}]")


class Cookies(MutableMapping[str, str]):
    """A cookie jar readable and writable like a dict of name -> value.

    >>> cookies = Cookies({"session": "abc"})
    >>> cookies["session"], len(cookies)
    ('abc', 1)
    >>> del cookies["session"]
    >>> "session" in cookies
    False

    `jar` is the `http.cookiejar.CookieJar` underneath (pass your own to share or persist it,
    e.g. a `MozillaCookieJar`).
    """

    def __init__(self, cookies: CookieTypes | None = None) -> None:
        # Imported here: http.cookiejar brings urllib.request and http.client with it (15 ms),
        # which a client that never sees a cookie should not pay for.
        from http.cookiejar import CookieJar

        if isinstance(cookies, Cookies):
            self.jar: CookieJar = cookies.jar
            return
        if isinstance(cookies, CookieJar):
            self.jar = cookies
            return
        self.jar = CookieJar()
        if cookies is not None:
            self.update(_pairs(cookies))

    # -- the dict view (name -> value; the first cookie of that name) ----------------------
    def __getitem__(self, name: str) -> str:
        for cookie in self.jar:
            if cookie.name == name:
                return cookie.value or ""
        raise KeyError(name)

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        found = [c for c in self.jar if c.name == name]
        if not found:
            raise KeyError(name)
        for cookie in found:
            self.jar.clear(cookie.domain, cookie.path, cookie.name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(cookie.name for cookie in self.jar))

    def __len__(self) -> int:
        return len({cookie.name for cookie in self.jar})

    def __bool__(self) -> bool:
        return any(True for _ in self.jar)

    def __repr__(self) -> str:
        names = ", ".join(sorted({f"{c.name}@{c.domain or '*'}" for c in self.jar}))
        return f"<Cookies [{names}]>"  # names and domains only: values may be credentials

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        """Set a cookie; with no `domain` it goes to every host."""
        _check(name, value)
        from http.cookiejar import Cookie

        cookie = Cookie(
            version=0, name=name, value=value, port=None, port_specified=False,
            domain=domain, domain_specified=bool(domain),
            domain_initial_dot=domain.startswith("."), path=path, path_specified=True,
            secure=False, expires=None, discard=True, comment=None, comment_url=None,
            rest={}, rfc2109=False)
        self.jar.set_cookie(cookie)

    # -- on the wire ---------------------------------------------------------------------
    def header_for(self, request: Request, extra: Cookies | None = None) -> str | None:
        """The `Cookie` header value `request` should carry, or None: what the jar's rules
        allow for its URL, the domain-less cookies, and `extra` (this request's own)."""
        parts = []
        for cookies in (self, extra):
            if cookies is not None:
                view = _RequestView(request)
                cookies.jar.add_cookie_header(view)  # type: ignore[arg-type]
                if view.cookie:
                    parts.append(view.cookie)
        return "; ".join(parts) if parts else None

    def extract(self, response: Response) -> None:
        """Store the cookies `response` sets (its request's URL decides their scope)."""
        raw = response._raw_headers
        if raw and not _SET_COOKIE.search(raw):
            return  # the common case, decided without splitting the header block
        self.jar.extract_cookies(_ResponseView(response),  # type: ignore[arg-type]
                                 _RequestView(response.request))  # type: ignore[arg-type]


def _pairs(cookies: CookieTypes) -> Iterable[tuple[str, str]]:
    if isinstance(cookies, Mapping):
        return list(cookies.items())
    try:
        pairs = [(name, value) for name, value in cookies]  # type: ignore[misc]
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"cookies= must be a dict, a list of (name, value) pairs, a "
                             f"poolhttp.Cookies or a http.cookiejar.CookieJar, not "
                             f"{type(cookies).__name__}") from exc
    return pairs


def _check(name: object, value: object) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidRequest(f"a cookie's name and value must be str, not "
                             f"{type(name).__name__} and {type(value).__name__}")
    if not name or _BAD_NAME.search(name):
        raise InvalidRequest(f"invalid cookie name {name!r} (a token: no spaces, separators or "
                             "control characters)")
    if _BAD_VALUE.search(value):
        raise InvalidRequest(f"the value of cookie {name!r} contains a control character or "
                             "';' (CR and LF would split the header)")


class _RequestView:
    """What `http.cookiejar` reads of a request: urllib.request.Request's interface."""

    unverifiable = False

    def __init__(self, request: Request) -> None:
        url = request.url
        self._request = request
        self.type = url.scheme
        self.host = url.origin.host_header
        self.origin_req_host = url.host
        self._full = f"{url.scheme}://{url.origin.host_header}{url.raw_path}"
        self.cookie = ""

    def get_full_url(self) -> str:
        return self._full

    def has_header(self, name: str) -> bool:
        return name.lower() == "cookie" and bool(self.cookie)

    def get_header(self, name: str, default: str | None = None) -> str | None:
        return default

    def add_unredirected_header(self, name: str, value: str) -> None:
        if name.lower() == "cookie":
            self.cookie = value


class _ResponseView:
    """What `http.cookiejar` reads of a response: `info().get_all(name)`."""

    def __init__(self, response: Response) -> None:
        self._headers = response.headers

    def info(self) -> _ResponseView:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        values = self._headers.get_list(name)
        return values if values else default


"""Per-route settings: `mounts={"https://api.example.com": Mount(limits=..., retries=...)}`.

One client, one pool: a mount changes how the requests to the origins its pattern matches are
sent (time-outs, retries) and how their connections are made and bounded (limits, proxy, TLS
verification, HTTP/2). What a mount leaves unset comes from the client.

Patterns, from the least to the most specific (the most specific match wins):

    "all://"                     every request
    "https://"                   every https request
    "all://*.example.com"        any scheme, the subdomains of example.com (not example.com)
    "http://example.com"         http, that host, any port
    "https://example.com:8443"   https, that host and port

>>> patterns = MountPatterns({"all://": 1, "https://": 2, "https://api.example.com": 3})
>>> patterns.match("https", "api.example.com", 443), patterns.match("http", "x.org", 80)
(3, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._config import Limits, Retry, Timeout
from ._exceptions import InvalidURL

__all__ = ["UNSET", "Mount", "MountPattern", "MountPatterns"]

T = TypeVar("T")


class _Unset:
    """A Mount setting left to the client (None is a value: `proxy=None` means direct)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, repr=False)
class Mount:
    """Settings for the requests a mount pattern matches; unset ones come from the client.

    - `limits`: this route's own `Limits`: `max_connections` bounds the route's connections
      in all (the client's `max_connections` still bounds the whole pool),
      `max_connections_per_host`, `max_keepalive_connections`, `keepalive_expiry` and
      `max_concurrent_streams` apply to each of its origins.
    - `timeout`, `retries`: the defaults of its requests (a request's own `timeout=` wins).
    - `proxy`: a proxy URL, or None for direct connections (even with `trust_env`).
    - `verify`, `cert`, `http2`: as the client's arguments.

    >>> Mount(http2=True, proxy=None)
    Mount(proxy=None, http2=True)
    """

    limits: Any = UNSET
    timeout: Any = UNSET
    retries: Any = UNSET
    proxy: Any = UNSET
    verify: Any = UNSET
    cert: Any = UNSET
    http2: Any = UNSET

    def __post_init__(self) -> None:
        if self.limits is not UNSET and not isinstance(self.limits, Limits):
            raise TypeError(f"Mount(limits=...) must be a poolhttp.Limits, not "
                            f"{type(self.limits).__name__}")
        if self.timeout is not UNSET:
            object.__setattr__(self, "timeout", Timeout.coerce(self.timeout))
        if self.retries is not UNSET:
            object.__setattr__(self, "retries", Retry.coerce(self.retries))
        if self.http2 is not UNSET and not isinstance(self.http2, bool):
            raise TypeError(f"Mount(http2=...) must be True or False, not {self.http2!r}")
        if isinstance(self.proxy, str):  # checked now; kept parsed, so no repr shows a password
            from ._proxy import Proxy

            object.__setattr__(self, "proxy", Proxy(self.proxy))

    def __repr__(self) -> str:
        given = []
        for name in ("limits", "timeout", "retries", "proxy", "verify", "cert", "http2"):
            value = getattr(self, name)
            if value is UNSET:
                continue
            if name == "cert" and isinstance(value, tuple) and len(value) == 3:
                value = (*value[:2], "[secure]")  # a key's password is never shown
            given.append(f"{name}={value!r}")
        return f"Mount({', '.join(given)})"


@dataclass(frozen=True)
class MountPattern:
    """One parsed pattern: scheme (None: all), host (None: any; "*.x" for subdomains of x),
    port (None: any)."""

    text: str
    scheme: str | None
    host: str | None
    port: int | None

    @classmethod
    def parse(cls, text: str) -> MountPattern:
        if not isinstance(text, str):
            raise TypeError(f"a mount pattern must be a str such as 'https://example.com', "
                            f"not {type(text).__name__}")
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("all", "http", "https"):
            raise InvalidURL(f"mount pattern {text!r}: write it as 'all://', 'https://', "
                             "'http://host', 'https://host:port' or 'all://*.domain'")
        rest = rest.rstrip("/")
        if "/" in rest or "?" in rest or "@" in rest:
            raise InvalidURL(f"mount pattern {text!r}: a pattern names a scheme, host and "
                             "port, not a path, query or credentials")
        host, port = _split_host_port(text, rest)
        if host is not None and "*" in host and not (host.startswith("*.")
                                                       and "*" not in host[2:]):
            raise InvalidURL(f"mount pattern {text!r}: a wildcard goes only at the start, "
                             "as in '*.example.com'")
        return cls(text, None if scheme == "all" else scheme, host, port)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and scheme != self.scheme:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.host is None:
            return True
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    @property
    def specificity(self) -> tuple[int, int, int, int]:
        """Sort key: a port beats a host, an exact host a wildcard, a longer host a shorter
        one, a scheme none."""
        host = self.host or ""
        return (self.port is not None, bool(host) and not host.startswith("*."), len(host),
                self.scheme is not None)


def _split_host_port(text: str, rest: str) -> tuple[str | None, int | None]:
    if not rest:
        return None, None
    if rest.startswith("["):  # an IPv6 literal
        end = rest.find("]")
        if end < 0:
            raise InvalidURL(f"mount pattern {text!r}: unclosed '[' in the host")
        host, tail = rest[1:end], rest[end + 1:]
    else:
        host, _, port_text = rest.partition(":")
        tail = ":" + port_text if port_text else ""
    if not tail:
        return host.lower().rstrip("."), None
    port_text = tail[1:]
    if not tail.startswith(":") or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidURL(f"mount pattern {text!r}: the port must be a number from 1 to 65535")
    return host.lower().rstrip(".") or None, int(port_text)


class MountPatterns(Generic[T]):
    """Patterns mapped to values, matched most specific first."""

    def __init__(self, mounts: Mapping[str, T]) -> None:
        if not isinstance(mounts, Mapping):
            raise TypeError(f"mounts must be a mapping of pattern to Mount, not "
                            f"{type(mounts).__name__}")
        parsed = [(MountPattern.parse(text), value) for text, value in mounts.items()]
        self._patterns = sorted(parsed, key=lambda item: item[0].specificity, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def match(self, scheme: str, host: str, port: int) -> T | None:
        for pattern, value in self._patterns:
            if pattern.matches(scheme, host, port):
                return value
        return None

    def values(self) -> list[T]:
        return [value for _, value in self._patterns]

    def match_pattern(self, scheme: str, host: str, port: int) -> tuple[str, T] | None:
        """The matching pattern's text and its value (the text names the route)."""
        for pattern, value in self._patterns:
            if pattern.matches(scheme, host, port):
                return pattern.text, value
        return None

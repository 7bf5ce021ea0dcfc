"""A bounded DNS cache with a time-to-live, without I/O.

The drivers resolve names (asyncio's executor, or the calling thread), coalesce concurrent
look-ups of one name into one, and keep the answers here for `ttl` seconds. IP literals never
reach the resolver: `literal_address` answers them at once.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

# AF_INET6 differs between platforms (10 on Linux, 30 on macOS, 23 on Windows), so the family
# constants come from `socket`. Only constants: nothing here opens a socket or resolves a name.
from socket import AF_INET, AF_INET6, AF_UNSPEC

__all__ = ["Address", "DnsCache", "literal_address"]

# (family, sockaddr) as getaddrinfo returns them: sockaddr is (host, port) or, for IPv6,
# (host, port, flowinfo, scope_id).
Address = tuple[int, tuple[object, ...]]


def literal_address(host: str, port: int, family: int) -> list[Address] | None:
    """The address of an IP literal host, or None when `host` is a name to resolve.

    `family` is AF_UNSPEC (0), AF_INET or AF_INET6; a literal of another family gives [].

    >>> literal_address("192.0.2.7", 80, AF_UNSPEC) == [(AF_INET, ("192.0.2.7", 80))]
    True
    >>> literal_address("::1", 443, AF_UNSPEC) == [(AF_INET6, ("::1", 443, 0, 0))]
    True
    >>> literal_address("::1", 443, AF_INET)
    []
    >>> literal_address("example.com", 80, AF_UNSPEC) is None
    True
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 4:
        return [(AF_INET, (host, port))] if family in (AF_UNSPEC, AF_INET) else []
    return [(AF_INET6, (host, port, 0, 0))] if family in (AF_UNSPEC, AF_INET6) else []


class DnsCache:
    """Maps (host, port, family) to addresses for `ttl` seconds; at most `max_entries`.

    The caller passes the clock in: an answer put at `now` is served until `now + ttl`.

    >>> cache = DnsCache(ttl=30.0)
    >>> key = ("example.com", 443, AF_UNSPEC)
    >>> cache.put(key, [(AF_INET, ("192.0.2.7", 443))], now=100.0)
    >>> cache.get(key, now=129.5) == [(AF_INET, ("192.0.2.7", 443))]
    True
    >>> cache.get(key, now=130.0) is None
    True
    """

    def __init__(self, ttl: float, max_entries: int = 1024) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, int], tuple[float, list[Address]]] = (
            OrderedDict())
        self.lookups = 0  # resolver calls made (for tests and stats)

    def get(self, key: tuple[str, int, int], now: float) -> list[Address] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, addresses = entry
        if now >= expires:
            del self._entries[key]
            return None
        return addresses

    def put(self, key: tuple[str, int, int], addresses: list[Address], now: float) -> None:
        self.lookups += 1
        if self.ttl <= 0 or not addresses:
            return
        self._entries[key] = (now + self.ttl, addresses)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

"""A bounded DNS cache with a time-to-live, without I/O.

The drivers resolve names (asyncio's executor, or the calling thread), coalesce concurrent
look-ups of one name into one, and keep the answers here for `ttl` seconds. IP literals never
reach the resolver: `literal_address` answers them at once.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

__all__ = ["Address", "DnsCache", "literal_address"]

# (family, sockaddr) as getaddrinfo returns them: sockaddr is (host, port) or, for IPv6,
# (host, port, flowinfo, scope_id).
Address = tuple[int, tuple[object, ...]]

AF_INET = 2  # socket.AF_INET / AF_INET6 on every platform we run on; no socket import here
AF_INET6 = 10


def literal_address(host: str, port: int, family: int) -> list[Address] | None:
    """The address of an IP literal host, or None when `host` is a name to resolve."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 4:
        return [(AF_INET, (host, port))] if family in (0, AF_INET) else []
    return [(AF_INET6, (host, port, 0, 0))] if family in (0, AF_INET6) else []


class DnsCache:
    """Maps (host, port, family) to addresses for `ttl` seconds; at most `max_entries`."""

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

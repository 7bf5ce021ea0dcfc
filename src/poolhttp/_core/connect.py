"""One connect attempt, planned without I/O: what to try, in which order, and what to report.

Both drivers open a connection (an `Open` action) the same way and differ only in their I/O
(`sock_connect` or `connect`, `create_connection` or `wrap_socket`, a look-up Task or
thread). What they share lives here, in one `ConnectPlan` per attempt:

    plan = ConnectPlan(origin, family, timeout, deadline, dns, now)
    addresses = plan.known(now)          # an IP literal or a cached answer; else the driver
                                         # looks `plan.dns_key` up: `addresses_of(infos)`
    plan.resolved(addresses, now)        # -> the "dns.resolved" trace info
    while (address := plan.next_address(now)) is not None:
        TCP connect; on OSError `plan.failed(address, exc)` and go on
    (none left, or out of time:) raise plan.error()
    plan.connected(address, now)         # -> the "tcp.connected" trace info
    TLS handshake; on failure (certificate or other) raise plan.handshake_failed(exc)
    plan.handshake(version, now)         # -> the "tls.handshake" trace info
    plan.speaks_h2(protocols, alpn)      # HTTP/2 or HTTP/1.1, as ALPN chose (or ConnectError)

Nothing here opens a socket, reads a clock or waits: `now` comes from the driver, on the same
clock as the request's deadline.

The deadline policy (both drivers). A connect is bounded by the connect time-out
(`Timeout.connect`) and by the total deadline (`Timeout.total`) of the request it was opened
for, the ticket of its `Open` action: `plan.end` is the earlier of the two, and `plan.by_total`
says which one it is. When the connect time-out ends it, the connect fails with ConnectTimeout
and, like any failed connect, the core hands that error to the oldest waiter of the key
(`connect_failed(conn, error, now)`). When the total deadline cuts it short, the connect is
given up instead (`connect_failed(conn, None, now)`): nobody else fails with an error that is
about another request's deadline, the slot goes to whoever waits next, who opens a connection
of its own under its own limits, and the request that started the connect raises TotalTimeout
("no connection to ... before the total time-out"). `out_of_time()` builds the one that
applies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._config import Timeout
from .._exceptions import ConnectError, ConnectTimeout, HTTPError, TotalTimeout
from .._urls import Origin
from .dns import Address, DnsCache, literal_address
from .records import PoolKey, Ticket

if TYPE_CHECKING:
    from .._trace import Trace

__all__ = ["ConnectPlan", "DnsKey", "RequestTicket", "addresses_of", "describe",
           "lookup_error"]

# What DnsCache and the drivers' shared look-ups are keyed by: (host, port, family).
DnsKey = tuple[str, int, int]


class RequestTicket(Ticket):
    """A request's ticket in both drivers, with what opening a connection for it needs: the
    origin to dial, its time-outs, its total deadline and its trace hook."""

    __slots__ = ("deadline", "origin", "timeout", "trace")

    def __init__(self, key: PoolKey, origin: Origin, timeout: Timeout, deadline: float | None,
                 trace: Trace | None, fresh: bool) -> None:
        super().__init__(key, fresh)
        self.origin = origin
        self.timeout = timeout
        self.deadline = deadline
        self.trace = trace


class ConnectPlan:
    """The addresses one connect tries, the failures it met, and the error it ends with."""

    __slots__ = ("_addresses", "_dns", "_errors", "_literal", "_lookups", "_mark", "_next",
                 "_timed_out",
                 "by_total", "dns_key", "end", "limit", "origin", "total")

    def __init__(self, origin: Origin, family: int, timeout: Timeout, deadline: float | None,
                 dns: DnsCache, now: float, *, mark: float | None = None) -> None:
        self.origin = origin
        self.dns_key: DnsKey = (origin.host, origin.port, family)
        self.limit = timeout.connect
        self.total = timeout.total
        end = None if self.limit is None else now + self.limit
        # Cut short by the request's total deadline (rather than the connect time-out)?
        self.by_total = deadline is not None and (end is None or deadline < end)
        self.end = deadline if self.by_total else end  # None: no bound at all
        self._dns = dns
        self._lookups = dns.lookups  # a look-up made meanwhile means the answer was not cached
        # When the last step began, for the trace's `seconds`. `mark` (with the `now` given to
        # resolved/connected/handshake) may be a finer clock than the deadlines' one: the
        # event loop's may tick in milliseconds.
        self._mark = now if mark is None else mark
        self._literal = False
        self._addresses: list[Address] = []
        self._next = 0
        self._errors: list[str] = []
        self._timed_out = False

    # -- addresses ------------------------------------------------------------------------
    def known(self, now: float) -> list[Address] | None:
        """The addresses to try when no look-up is needed: an IP literal's, or a cached
        answer; None: the driver looks `dns_key` up (see `addresses_of`, `lookup_error`)."""
        host, port, family = self.dns_key
        literal = literal_address(host, port, family)
        if literal is None:
            return self._dns.get(self.dns_key, now)
        self._literal = True
        if not literal:
            raise ConnectError(f"{host} is not an address of the requested family",
                               origin=self.origin.key)
        return literal

    def resolved(self, addresses: list[Address], now: float) -> dict[str, Any]:
        """Try `addresses`, in their order; returns the info of the "dns.resolved" event."""
        self._addresses = addresses
        self._next = 0
        return {"seconds": self._lap(now), "addresses": addresses, "literal": self._literal,
                "cached": not self._literal and self._dns.lookups == self._lookups}

    def next_address(self, now: float) -> Address | None:
        """The next address to connect to, or None when none is left or the time is up
        (then raise `error()`)."""
        if self._timed_out or (self.end is not None and now >= self.end):
            self._timed_out = True
            return None
        if self._next >= len(self._addresses):
            return None
        self._next += 1
        return self._addresses[self._next - 1]

    def remaining(self, now: float) -> float | None:
        """The time left for this connect (at least 1 ms: a socket time-out of 0 would mean
        non-blocking), None when nothing bounds it."""
        return None if self.end is None else max(0.001, self.end - now)

    # -- outcomes -------------------------------------------------------------------------
    def failed(self, address: Address, exc: OSError) -> None:
        """The TCP connect to `address` failed; the next address is tried."""
        self._errors.append(f"{address[1][0]}: {describe(exc)}")
        if _our_time_out(exc):
            self._timed_out = True

    def connected(self, address: Address, now: float) -> dict[str, Any]:
        """TCP is connected to `address`; returns the info of the "tcp.connected" event."""
        return {"seconds": self._lap(now), "address": address[1]}

    def handshake(self, version: str | None, now: float) -> dict[str, Any]:
        """The TLS handshake is done; returns the info of the "tls.handshake" event."""
        return {"seconds": self._lap(now), "version": version}

    def speaks_h2(self, protocols: tuple[str, ...], selected: str | None) -> bool:
        """Whether the TLS connection whose ALPN chose `selected` speaks HTTP/2 (else
        HTTP/1.1), for a key that offered `protocols`; ConnectError when the server chose
        something the key does not speak (HTTP/1.1, or nothing, when h2 alone was offered)."""
        if selected == "h2":
            return True
        if "http/1.1" in protocols and selected in (None, "http/1.1"):
            return False
        key = self.origin.key
        raise ConnectError(f"{key} chose {selected!r} over TLS (ALPN); this client speaks "
                           f"{' and '.join(protocols)}", origin=key)

    def error(self) -> HTTPError:
        """The error a connect ends with when no address answered."""
        if self._timed_out:
            return self.out_of_time()
        key = self.origin.key
        reasons = "; ".join(self._errors) if self._errors else "no address to connect to"
        return ConnectError(f"cannot connect to {key}: {reasons}", origin=key)

    def out_of_time(self) -> ConnectTimeout | TotalTimeout:
        """The error of a connect that reached `end`: TotalTimeout when the request's total
        deadline cut it short (the driver gives the connect up), else ConnectTimeout."""
        key = self.origin.key
        if self.by_total:
            return TotalTimeout(f"no connection to {key} before the total time-out",
                                origin=key, timeout=self.total)
        assert self.limit is not None  # nothing else bounds a connect
        return ConnectTimeout(f"no connection to {key} within {self.limit:g}s (connect "
                              "time-out)", origin=key, timeout=self.limit)

    def lookup_timed_out(self) -> ConnectTimeout | TotalTimeout:
        """Out of time while waiting for another caller's look-up of the same name."""
        self._timed_out = True
        if self.by_total:
            return self.out_of_time()
        return ConnectTimeout(f"DNS look-up of {self.origin.host!r} did not finish in time",
                              origin=self.origin.key, timeout=self.limit)

    def untrusted(self, verify_message: str) -> ConnectError:
        """The server's TLS certificate failed verification (no other address is tried)."""
        key = self.origin.key
        return ConnectError(f"TLS certificate of {key} not trusted: {verify_message}",
                            origin=key)

    def handshake_failed(self, exc: OSError) -> HTTPError:
        """Setting up the connected socket failed: the certificate did not verify (an
        ssl.SSLCertVerificationError, told by its `verify_message`), or the TLS handshake
        failed otherwise; no other address is tried."""
        verify_message = getattr(exc, "verify_message", None)
        if verify_message is not None:
            return self.untrusted(verify_message)
        if _our_time_out(exc):
            self._timed_out = True
            return self.out_of_time()
        key = self.origin.key
        return ConnectError(f"cannot connect to {key}: {exc}", origin=key)

    def _lap(self, now: float) -> float:
        seconds, self._mark = now - self._mark, now
        return seconds


def addresses_of(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    """The (family, sockaddr) pairs of getaddrinfo's answer, in its order."""
    return [(info[0], info[4]) for info in infos]


def lookup_error(host: str, origin: str, exc: OSError) -> ConnectError:
    """A failed look-up of `host` (shared by every connect that waited for it)."""
    return ConnectError(f"DNS look-up of {host!r} failed: {exc}", origin=origin)


def describe(exc: OSError) -> str:
    """'Connection refused' rather than asyncio's 'Connect call failed (...)'."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _our_time_out(exc: OSError) -> bool:
    # A socket time-out (set from `end`) has no errno; the kernel's ETIMEDOUT has one and is
    # an ordinary failure of that address.
    return isinstance(exc, TimeoutError) and exc.errno is None

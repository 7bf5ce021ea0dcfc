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

Through a proxy (`via`) the plan dials the proxy's host instead of the origin's, and its
errors name the proxy (`ProxyError`); `target_plan()` looks the origin up for a SOCKS proxy that
wants an address; `tunnelled()` / `tunnel_failed()` report the tunnel. With `uds` the driver
connects that Unix socket and no address is looked up.

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
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._config import Timeout
from .._exceptions import ConnectError, ConnectTimeout, HTTPError, ProxyError, TotalTimeout
from .._urls import Origin
from .dns import Address, DnsCache, literal_address
from .records import PoolKey, Ticket

if TYPE_CHECKING:
    from .._config import PoolConfig
    from .._proxy import Proxy
    from .._trace import Trace

__all__ = ["ConnectPlan", "DnsKey", "RequestTicket", "addresses_of", "describe",
           "lookup_error", "prepare_socket"]

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
                 "by_total", "dns_key", "end", "family", "limit", "origin", "total", "uds",
                 "via")

    def __init__(self, origin: Origin, family: int, timeout: Timeout, deadline: float | None,
                 dns: DnsCache, now: float, *, mark: float | None = None,
                 via: Proxy | None = None, uds: str | None = None) -> None:
        self.origin = origin
        self.family = family
        self.via = via  # the proxy dialled instead of the origin
        self.uds = uds  # the Unix socket dialled instead of any address
        host, port = (origin.host, origin.port) if via is None else (via.host, via.port)
        self.dns_key: DnsKey = (host, port, family)
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

    def handshake(self, version: str | None, now: float, resumed: bool = False,
                  alpn: str | None = None) -> dict[str, Any]:
        """The TLS handshake is done (`resumed`: an earlier session was resumed); returns the
        info of the "tls.handshake" event."""
        return {"seconds": self._lap(now), "version": version, "resumed": resumed,
                "alpn": alpn}

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
        if self.via is not None:
            from .tunnel import proxy_unreachable

            return proxy_unreachable(self.via, origin=key, reason=reasons)
        return ConnectError(f"cannot connect to {key}: {reasons}", origin=key)

    def lookup_failed(self, error: HTTPError) -> HTTPError:
        """The look-up of the host to dial failed: `error` as it is, or, when that host is
        the proxy's, a ProxyError naming the proxy."""
        if self.via is None or isinstance(error, TimeoutError):
            return error
        from .tunnel import proxy_unreachable

        return proxy_unreachable(self.via, origin=self.origin.key, reason=str(error))

    def uds_failed(self, exc: OSError) -> HTTPError:
        """Connecting to the Unix socket `uds` failed."""
        if _our_time_out(exc):
            self._timed_out = True
            return self.out_of_time()
        key = self.origin.key
        return ConnectError(f"cannot connect to {key} through the Unix socket {self.uds}: "
                            f"{describe(exc)}", origin=key)

    def target_plan(self) -> ConnectPlan:
        """A plan to look the origin up within this connect's time (a SOCKS proxy that
        wants the address, not the name, of the target: socks5://, socks4://)."""
        plan = ConnectPlan.__new__(ConnectPlan)
        for name in ConnectPlan.__slots__:
            if hasattr(self, name):
                setattr(plan, name, getattr(self, name))
        plan.via = None
        plan.dns_key = (self.origin.host, self.origin.port, self.family)
        plan._errors = []
        return plan

    def tunnel_address(self, addresses: list[Address]) -> str:
        """The address of the target to give a SOCKS proxy that takes addresses: the first
        one (the first IPv4 one for SOCKS4, which has no IPv6)."""
        assert self.via is not None
        if self.via.scheme == "socks4":
            addresses = [a for a in addresses if a[0] == socket.AF_INET] or addresses
        return str(addresses[0][1][0])

    def tunnelled(self, now: float) -> dict[str, Any]:
        """The proxy opened the tunnel; returns the info of the "proxy.tunnel" event."""
        assert self.via is not None
        return {"seconds": self._lap(now), "proxy": self.via.url}

    def proxy_handshake_failed(self, exc: OSError) -> HTTPError:
        """The TLS handshake with an https:// proxy failed."""
        verify_message = getattr(exc, "verify_message", None)
        reason = (f"its certificate is not trusted: {verify_message}" if verify_message
                  else describe(exc))
        return self._proxy_failed(exc, f"TLS handshake with proxy {self._via_url} (for "
                                  f"{self.origin.key}) failed: {reason}")

    def tunnel_failed(self, exc: OSError) -> HTTPError:
        """The connection to the proxy failed while it was opening the tunnel."""
        return self._proxy_failed(exc, f"proxy {self._via_url} failed while opening a tunnel "
                                  f"to {self.origin.key}: {describe(exc)}")

    @property
    def _via_url(self) -> str:
        assert self.via is not None
        return self.via.url

    def _proxy_failed(self, exc: OSError, message: str) -> HTTPError:
        """ConnectTimeout/TotalTimeout when our time ran out, else a ProxyError saying
        `message`."""
        if _our_time_out(exc):
            self._timed_out = True
            return self.out_of_time()
        return ProxyError(message, origin=self.origin.key, proxy=self._via_url)

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


def prepare_socket(sock: socket.socket, config: PoolConfig) -> None:
    """What every new socket of a pool gets before it connects: TCP_NODELAY (requests are
    written whole; Nagle would only delay them), the local address to bind, and the user's
    socket_options. Raises OSError (that attempt fails)."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if config.local_address is not None:
            sock.bind((config.local_address, 0))
    for level, option, value in config.socket_options:
        sock.setsockopt(level, option, value)


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

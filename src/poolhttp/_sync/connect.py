"""Opening connections for the threaded driver: look-up, TCP (or a Unix socket), the proxy's
tunnel, TLS with session resumption. The decisions and the wording live in
`_core/connect.py` (ConnectPlan) and `_core/tunnel.py`; this module does the blocking I/O.

    dialer = SyncDialer(config)
    sock = dialer.open(plan, key, trace)  # connected, tunnelled, TLS done; blocking, no time-out
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, cast

from .._core.connect import ConnectPlan, addresses_of, lookup_error, prepare_socket
from .._core.dns import Address, DnsCache
from .._core.eyeballs import interleave
from .._core.pool import Conn, PoolKey
from .._exceptions import ConnectError, ProxyError
from .._route import route_of
from .._tls import HTTP1, SessionStore, VerifyTypes, tls_context
from .._trace import Trace, emit
from .dial import open_tcp
from .tlstls import TLS_SOCKETS, TLSInTLS

if TYPE_CHECKING:
    from .._config import PoolConfig
    from .._proxy import Proxy

__all__ = ["SyncDialer"]


class _Lookup:
    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.addresses: list[Address] = []
        self.error: BaseException | None = None


class SyncDialer:
    """The connect side of one SyncPool: its DNS cache, shared look-ups and TLS sessions."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.dns = DnsCache(config.dns_ttl)
        self._lock = threading.Lock()  # guards the cache and the look-ups in flight
        self._lookups: dict[tuple[str, int, int], _Lookup] = {}
        self.sessions = SessionStore()
        self.tls_resumed = 0  # handshakes that resumed a session, for stats()

    def _setup(self, sock: socket.socket) -> None:
        prepare_socket(sock, self.config)

    def open(self, plan: ConnectPlan, key: PoolKey, trace: Trace | None) -> socket.socket:
        """A connected socket for `key` (TLS, when https, through the route's proxy if
        any), in blocking mode with no time-out; raises the plan's errors."""
        route = route_of(key)
        if plan.uds is not None:
            sock = self._open_uds(plan)
        else:
            try:
                addresses = interleave(self._resolve(plan))
            except ConnectError as exc:
                raise plan.lookup_failed(exc) from exc
            info = plan.resolved(addresses, time.monotonic())
            if trace is not None:
                emit(trace, "dns.resolved", **info)
            sock, address = open_tcp(plan, addresses, delay=self.config.happy_eyeballs_delay,
                                     setup=self._setup)
            info = plan.connected(address, time.monotonic())
            if trace is not None:
                emit(trace, "tcp.connected", **info)
        proxy = route.proxy
        try:
            if proxy is not None and proxy.is_tls:
                sock = self._tls_to_proxy(sock, plan, proxy, route.verify)
            if route.tunnels(plan.origin):
                assert proxy is not None
                self._tunnel(sock, plan, proxy, trace)
            if plan.origin.is_tls:
                sock = self._handshake(sock, plan, key, trace)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_uds(self, plan: ConnectPlan) -> socket.socket:
        assert plan.uds is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._setup(sock)
            sock.settimeout(plan.remaining(time.monotonic()))
            sock.connect(plan.uds)
        except OSError as exc:
            sock.close()
            raise plan.uds_failed(exc) from exc
        except BaseException:
            sock.close()
            raise
        return sock

    def _tls_to_proxy(self, sock: socket.socket, plan: ConnectPlan, proxy: Proxy,
                      verify: VerifyTypes) -> socket.socket:
        """TLS to an https:// proxy, verified as `verify=` says (an https origin's TLS then
        runs inside it: see `_handshake`)."""
        try:
            sock.settimeout(plan.remaining(time.monotonic()))
            return tls_context(verify).wrap_socket(sock, server_hostname=proxy.host)
        except OSError as exc:
            raise plan.proxy_handshake_failed(exc) from exc

    def _tunnel(self, sock: socket.socket, plan: ConnectPlan, proxy: Proxy,
                trace: Trace | None) -> None:
        """Have the proxy open a tunnel to the origin (CONNECT, or a SOCKS request)."""
        from .._core.tunnel import make_handshake

        origin = plan.origin
        address = None
        if proxy.is_socks and not proxy.remote_dns:
            address = plan.tunnel_address(self._resolve(plan.target_plan()))
        handshake = make_handshake(proxy, origin.host, origin.port, origin=origin.key,
                                   target_address=address)
        try:
            sock.settimeout(plan.remaining(time.monotonic()))
            sock.sendall(handshake.start())
            while not handshake.done:
                data = sock.recv(65536)
                if not data:
                    handshake.eof()
                reply = handshake.feed(data)
                if reply:
                    sock.sendall(reply)
        except ProxyError:
            raise
        except OSError as exc:
            raise plan.tunnel_failed(exc) from exc
        if handshake.leftover:
            raise plan.tunnel_failed(OSError(0, "the proxy sent data before the origin did"))
        info = plan.tunnelled(time.monotonic())
        if trace is not None:
            emit(trace, "proxy.tunnel", **info)

    def _handshake(self, sock: socket.socket, plan: ConnectPlan, key: PoolKey,
                   trace: Trace | None) -> socket.socket:
        route = route_of(key)
        inside = isinstance(sock, ssl.SSLSocket)  # the TLS of an https:// proxy
        # TLS inside TLS carries HTTP/1.1 only (see tlstls.py): ALPN offers nothing else.
        context = tls_context(route.verify, HTTP1 if inside else key.protocols, route.cert)
        session = self.sessions.get(key) if self.config.tls_resumption else None
        tls: ssl.SSLSocket | TLSInTLS
        try:
            sock.settimeout(plan.remaining(time.monotonic()))
            if inside:
                assert isinstance(sock, ssl.SSLSocket)
                tls = TLSInTLS(sock, context, plan.origin.host, session)
                tls.do_handshake()
            else:
                tls = context.wrap_socket(sock, server_hostname=plan.origin.host,
                                          session=session)
        except OSError as exc:  # ssl.SSLError (and SSLCertVerificationError) among them
            if session is not None:
                self.sessions.forget(key)
            raise plan.handshake_failed(exc) from exc
        resumed = bool(tls.session_reused)
        if resumed:
            self.tls_resumed += 1
        info = plan.handshake(tls.version(), time.monotonic(), resumed,
                              tls.selected_alpn_protocol())
        if trace is not None:
            emit(trace, "tls.handshake", **info)
        return cast("socket.socket", tls)  # TLSInTLS does what the connections use of one

    def keep_session(self, conn: Conn) -> None:
        """After the first response on `conn` (when a TLS 1.3 server's tickets have come):
        keep its TLS session for the next connection of its key."""
        sock = getattr(conn.io, "sock", None)
        if (isinstance(sock, TLS_SOCKETS) and not conn.multiplexed
                and self.sessions.wants(conn.key, bool(sock.session_reused))):
            try:
                self.sessions.keep(conn.key, sock.session)
            except (OSError, ValueError):  # closed meanwhile: nothing to keep
                pass

    def _resolve(self, plan: ConnectPlan) -> list[Address]:
        key = plan.dns_key
        with self._lock:
            known = plan.known(time.monotonic())
            if known is not None:
                return known
            lookup = self._lookups.get(key)
            owner = lookup is None
            if lookup is None:  # concurrent look-ups of one name wait for this one
                lookup = self._lookups[key] = _Lookup()
        host, port, family = key
        if owner:
            try:
                infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
                lookup.addresses = addresses_of(infos)
            except OSError as exc:
                lookup.error = lookup_error(host, plan.origin.key, exc)
            with self._lock:
                self._lookups.pop(key, None)
                self.dns.put(key, lookup.addresses, time.monotonic())
            lookup.done.set()
        elif not lookup.done.wait(plan.remaining(time.monotonic())):
            raise plan.lookup_timed_out()
        if lookup.error is not None:
            raise lookup.error
        return lookup.addresses

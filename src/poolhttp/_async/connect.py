"""Opening connections for the asyncio driver: look-ups shared by concurrent connects, TCP
(or a Unix socket), and the proxy's tunnel, on the raw socket before asyncio's transport
(and its TLS) takes it. The decisions and the wording live in `_core/connect.py`
(ConnectPlan) and `_core/tunnel.py`. TLS and the protocol choice are in pool.py.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter  # the trace's seconds: the loop's clock may tick in ms
from typing import TYPE_CHECKING

from .._core.connect import ConnectPlan, DnsKey, addresses_of, lookup_error, prepare_socket
from .._core.dns import Address, DnsCache
from .._core.eyeballs import interleave
from .._exceptions import ConnectError, ProxyError
from .._tls import SessionStore, VerifyTypes, tls_context
from .._trace import Trace, emit
from .dial import open_tcp

if TYPE_CHECKING:
    from .._config import PoolConfig
    from .._core.tunnel import Handshake
    from .._proxy import Proxy

__all__ = ["AsyncDialer"]


class AsyncDialer:
    """The connect side of one AsyncPool: its DNS cache, shared look-ups and TLS sessions."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.dns = DnsCache(config.dns_ttl)
        self.lookups: dict[DnsKey, asyncio.Task[list[Address]]] = {}
        self.sessions = SessionStore()
        self.tls_resumed = 0  # handshakes that resumed a session, for stats()

    def _setup(self, sock: socket.socket) -> None:
        prepare_socket(sock, self.config)

    async def open(self, loop: asyncio.AbstractEventLoop, plan: ConnectPlan,
                   proxy: Proxy | None, trace: Trace | None) -> socket.socket:
        """A connected non-blocking socket (to the Unix socket, the origin, or the proxy,
        tunnelled to the origin when `proxy` is given); raises the plan's errors."""
        if plan.uds is not None:
            sock = await self._open_uds(loop, plan)
        else:
            try:
                addresses = interleave(await self.resolve(loop, plan))
            except ConnectError as exc:
                raise plan.lookup_failed(exc) from exc
            info = plan.resolved(addresses, perf_counter())
            if trace is not None:
                emit(trace, "dns.resolved", **info)
            sock, address = await open_tcp(loop, plan, addresses,
                                           delay=self.config.happy_eyeballs_delay,
                                           setup=self._setup)
            info = plan.connected(address, perf_counter())
            if trace is not None:
                emit(trace, "tcp.connected", **info)
        if proxy is not None:
            try:
                await self._tunnel(loop, sock, plan, proxy, trace)
            except BaseException:
                sock.close()
                raise
        return sock

    async def _open_uds(self, loop: asyncio.AbstractEventLoop,
                        plan: ConnectPlan) -> socket.socket:
        assert plan.uds is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            self._setup(sock)
            await loop.sock_connect(sock, plan.uds)
        except OSError as exc:
            sock.close()
            raise plan.uds_failed(exc) from exc
        except BaseException:
            sock.close()
            raise
        return sock

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                      plan: ConnectPlan, proxy: Proxy, trace: Trace | None) -> None:
        """Have the proxy open a tunnel to the origin (CONNECT, or a SOCKS request), on the
        raw socket: the connect's timer (in the pool) bounds it."""
        from .._core.tunnel import make_handshake

        origin = plan.origin
        address = None
        if proxy.is_socks and not proxy.remote_dns:
            address = plan.tunnel_address(await self.resolve(loop, plan.target_plan()))
        handshake = make_handshake(proxy, origin.host, origin.port, origin=origin.key,
                                   target_address=address)
        try:
            await loop.sock_sendall(sock, handshake.start())
            while not handshake.done:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    handshake.eof()
                reply = handshake.feed(data)
                if reply:
                    await loop.sock_sendall(sock, reply)
        except ProxyError:
            raise
        except OSError as exc:
            raise plan.tunnel_failed(exc) from exc
        if handshake.leftover:
            raise plan.tunnel_failed(OSError(0, "the proxy sent data before the origin did"))
        info = plan.tunnelled(perf_counter())
        if trace is not None:
            emit(trace, "proxy.tunnel", **info)

    async def through_tls_proxy(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                                plan: ConnectPlan, proxy: Proxy, verify: VerifyTypes,
                                tunnel: bool, trace: Trace | None) -> asyncio.Transport:
        """TLS to an https:// proxy over the connected `sock` (verified as `verify=` says),
        and, with `tunnel`, its CONNECT to the origin; returns the TLS transport."""
        from .._core.tunnel import make_handshake

        origin = plan.origin
        handshake = make_handshake(proxy, origin.host, origin.port, origin=origin.key)
        reader = _TunnelReader(loop, handshake)
        try:
            transport, _ = await loop.create_connection(
                lambda: reader, sock=sock, ssl=tls_context(verify), server_hostname=proxy.host)
        except OSError as exc:
            sock.close()
            raise plan.proxy_handshake_failed(exc) from exc
        except BaseException:
            sock.close()
            raise
        if not tunnel:
            return transport
        try:
            transport.write(handshake.start())
            await reader.done
        except BaseException:
            transport.abort()
            raise
        if handshake.leftover:
            transport.abort()
            raise plan.tunnel_failed(OSError(0, "the proxy sent data before the origin did"))
        info = plan.tunnelled(perf_counter())
        if trace is not None:
            emit(trace, "proxy.tunnel", **info)
        return transport

    async def resolve(self, loop: asyncio.AbstractEventLoop,
                      plan: ConnectPlan) -> list[Address]:
        known = plan.known(loop.time())
        if known is not None:
            return known
        key = plan.dns_key
        lookup = self.lookups.get(key)
        if lookup is None:  # concurrent look-ups of one name share this task
            lookup = self.lookups[key] = loop.create_task(
                self._lookup(loop, key, plan.origin.key))
        return await asyncio.shield(lookup)

    async def _lookup(self, loop: asyncio.AbstractEventLoop, key: DnsKey,
                      origin: str) -> list[Address]:
        host, port, family = key
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.dns.put(key, [], loop.time())  # counts the look-up; caches nothing
            raise lookup_error(host, origin, exc) from exc
        finally:
            self.lookups.pop(key, None)
        addresses = addresses_of(infos)
        self.dns.put(key, addresses, loop.time())
        return addresses


class _TunnelReader(asyncio.Protocol):
    """Runs a proxy's handshake over a transport (an https:// proxy's TLS): `done` resolves
    when the tunnel is open, or fails with the proxy's refusal."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handshake: Handshake) -> None:
        self.handshake = handshake
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            reply = self.handshake.feed(data)
        except ProxyError as exc:
            self.done.set_exception(exc)
            return
        if reply and self.transport is not None:
            self.transport.write(reply)
        if self.handshake.done:
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            try:
                self.handshake.eof()
            except ProxyError as error:
                self.done.set_exception(error)

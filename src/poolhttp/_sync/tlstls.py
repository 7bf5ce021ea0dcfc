"""TLS inside TLS for the blocking client: an https origin through an https:// proxy.

An `ssl.SSLSocket` cannot wrap another, so the origin's TLS runs in an `ssl.SSLObject` over
memory buffers, fed from and flushed to the proxy's TLS socket. `TLSInTLS` offers what
`SyncConnection` uses of a TLS socket -- blocking or non-blocking reads and writes under one
Python time-out, `pending()`, `fileno()` for polling, and the TLS facts (version, ALPN,
session) -- so the connection code does not know the difference. Only HTTP/1.1 goes this way
(the HTTP/2 reader thread writes partially on a non-blocking socket, which this does not do).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import TypeVar

__all__ = ["TLS_SOCKETS", "TLSInTLS"]

T = TypeVar("T")


class TLSInTLS:
    """The origin's TLS (an SSLObject) over the proxy's TLS socket `outer`."""

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, server_hostname: str,
                 session: ssl.SSLSession | None) -> None:
        self._outer = outer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing,
                                     server_hostname=server_hostname, session=session)

    # -- the TLS work ----------------------------------------------------------------------
    def _run(self, operation: Callable[[], T]) -> T:
        """Run one SSLObject operation to its end: records out to the proxy, records in
        from it, as often as it needs. The outer socket's time-out bounds each wait; with a
        time-out of 0 a read that would wait raises SSLWantReadError."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(65536)
                if not data:
                    self._incoming.write_eof()
                    raise ConnectionResetError(0, "the proxy closed the tunnel") from None
                self._incoming.write(data)
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._outer.sendall(data)

    def do_handshake(self) -> None:
        self._run(self._tls.do_handshake)

    # -- what SyncConnection uses of a socket ----------------------------------------------
    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer)
        size = nbytes or len(view)

        def read() -> int:
            count: int = self._tls.read(size, view)  # type: ignore[assignment]
            return count

        return self._run(read)

    def recv(self, size: int) -> bytes:
        return self._run(lambda: self._tls.read(size))

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[self._run(partial(self._tls.write, view)):]

    def pending(self) -> int:
        return self._tls.pending() or self._outer.pending()

    def settimeout(self, timeout: float | None) -> None:
        self._outer.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._outer.gettimeout()

    def fileno(self) -> int:
        return self._outer.fileno()

    def getsockname(self) -> object:
        return self._outer.getsockname()

    def shutdown(self, how: int) -> None:
        self._outer.shutdown(how)

    def close(self) -> None:
        self._outer.close()

    # -- TLS facts -------------------------------------------------------------------------
    def version(self) -> str | None:
        return self._tls.version()

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    @property
    def session(self) -> ssl.SSLSession | None:
        return self._tls.session

    @property
    def session_reused(self) -> bool:
        return bool(self._tls.session_reused)

    @property
    def family(self) -> socket.AddressFamily:
        return self._outer.family


#: What a TLS connection's socket may be, for isinstance checks.
TLS_SOCKETS = (ssl.SSLSocket, TLSInTLS)

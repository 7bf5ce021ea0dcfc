"""The `poolhttp` loggers: what the pool does, at DEBUG; nothing at INFO in normal operation.

    poolhttp.pool        a request waited for a connection, and how long
    poolhttp.connection  a connection opened (origin, local port, proxy, TLS version, resumed),
                         reused, closed and why
    poolhttp.client      a request is sent again (retry), and why

    >>> import logging
    >>> logging.basicConfig(level=logging.DEBUG)           # doctest: +SKIP
    >>> logging.getLogger("poolhttp").setLevel(logging.DEBUG)  # doctest: +SKIP

Every call site checks `isEnabledFor(DEBUG)` before it builds a message, so with the level off
a request pays one cached look-up per logger it passes. Nothing logged carries credentials:
URLs are shown by their origin (never their userinfo) and proxies without their password;
headers are never logged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core.records import Conn
    from ._proxy import Proxy

__all__ = ["DEBUG", "client_log", "connection_log", "local_end", "log_closed", "log_opened",
           "log_reused", "log_waited", "pool_log"]

DEBUG = logging.DEBUG
pool_log = logging.getLogger("poolhttp.pool")
connection_log = logging.getLogger("poolhttp.connection")
client_log = logging.getLogger("poolhttp.client")


def local_end(sockname: object) -> str:
    """The local end of a socket (its getsockname()), for the log: a port, or the Unix
    socket's path."""
    if isinstance(sockname, tuple):
        return f"local port {sockname[1]}"
    if isinstance(sockname, bytes):  # an abstract Unix socket's name
        sockname = sockname.decode("ascii", "replace")
    return f"Unix socket {sockname or '-'}" if isinstance(sockname, str) else "?"


def log_opened(conn: Conn, origin: str, sockname: object, proxy: Proxy | None,
               tls_version: str | None, resumed: bool, http2: bool) -> None:
    """The connection `conn` to `origin` is open (called only when DEBUG is on)."""
    parts = [local_end(sockname)]
    if proxy is not None:
        parts.append(f"via proxy {proxy.url}")
    if tls_version is not None:
        parts.append(f"{tls_version}, {'resumed' if resumed else 'full handshake'}")
    parts.append("HTTP/2" if http2 else "HTTP/1.1")
    connection_log.debug("opened connection #%d to %s (%s)", conn.id, origin, ", ".join(parts))


def log_closed(conn: Conn, reason: str) -> None:
    """The pool closes `conn` because of `reason` (called only when DEBUG is on)."""
    connection_log.debug("closing connection #%d to %s after %d request%s: %s", conn.id,
                         conn.key.label, conn.requests, "" if conn.requests == 1 else "s",
                         reason)


def log_reused(conn: Conn) -> None:
    """A request goes on `conn`, which has carried others (called only when DEBUG is on)."""
    connection_log.debug("reusing connection #%d to %s (request %d on it)", conn.id,
                         conn.key.label, conn.requests)


def log_waited(conn: Conn, seconds: float) -> None:
    """A request waited `seconds` for `conn` (called only when DEBUG is on)."""
    pool_log.debug("waited %.3f s for a connection to %s (%s)", seconds, conn.key.label,
                   "a new one" if conn.requests <= 1 else f"#{conn.id}, released by another "
                   "request")

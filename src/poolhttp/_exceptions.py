"""The single exception tree of poolhttp.

    HTTPError                                   root of everything poolhttp raises
    ├── TransportError                          the request did not get a complete response
    │   ├── TimeoutException (also TimeoutError)
    │   │   ├── ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout, TotalTimeout
    │   ├── NetworkError (also OSError)
    │   │   ├── ConnectError, ReadError, WriteError
    │   │   │   └── ProxyError                a proxy failed or refused (ConnectError)
    │   │   └── ServerDisconnected            the peer closed before a response (ReadError)
    │   │       └── StaleConnectionError      ... on a reused connection; not retried (unsafe)
    │   └── ProtocolError
    │       ├── RemoteProtocolError           the server sent something invalid
    │       └── StreamReset                   the server reset this request's HTTP/2 stream
    ├── InvalidURL, InvalidRequest (also ValueError), PoolClosed (also RuntimeError)
    ├── HTTPStatusError                         from Response.raise_for_status()
    ├── DecodingError                           a body's Content-Encoding could not be decoded
    ├── ResponseTooLarge                        a body read into memory is over its cap
    ├── TooManyRedirects, RequestNotReplayable  following redirects (and auth challenges)
    └── RetryError

Network errors are also `OSError` and timeouts also `TimeoutError`, so `except OSError` and
`except TimeoutError` clauses written for sockets keep working. Errors coming out of httptools,
`socket` and `ssl` are translated where they are caught and chained with `raise ... from exc`.
Each exception carries structured fields (`origin`, and the limit or timeout that fired) next
to a message that names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Request, Response

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "DecodingError",
    "HTTPError",
    "HTTPStatusError",
    "InvalidRequest",
    "InvalidURL",
    "NetworkError",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "RequestNotReplayable",
    "ResponseTooLarge",
    "RetryError",
    "ServerDisconnected",
    "StaleConnectionError",
    "StreamReset",
    "TimeoutException",
    "TooManyRedirects",
    "TotalTimeout",
    "TransportError",
    "WriteError",
    "WriteTimeout",
]


class HTTPError(Exception):
    """Root of every exception poolhttp raises on purpose."""

    #: The origin ("http://host:port") the failure concerns, when there is one.
    origin: str | None = None

    def __init__(self, message: str, *, origin: str | None = None) -> None:
        super().__init__(message)
        self.origin = origin


class TransportError(HTTPError):
    """The request could not be completed: time-out, network failure or protocol violation."""


class TimeoutException(TransportError, TimeoutError):
    """A time-out fired. `timeout` is the limit in seconds that fired."""

    #: Which phase the limit belongs to: "connect", "read", "write", "pool" or "total".
    phase: str = ""

    def __init__(self, message: str, *, origin: str | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(message, origin=origin)
        self.timeout = timeout


class ConnectTimeout(TimeoutException):
    """No TCP (and TLS) connection to the origin within `Timeout.connect`."""

    phase = "connect"


class ReadTimeout(TimeoutException):
    """The server sent nothing for `Timeout.read` seconds while a response was expected."""

    phase = "read"


class WriteTimeout(TimeoutException):
    """The server accepted no request bytes for `Timeout.write` seconds."""

    phase = "write"


class PoolTimeout(TimeoutException):
    """No connection became available within `Timeout.pool`: the pool's limits were reached."""

    phase = "pool"


class TotalTimeout(TimeoutException):
    """The whole exchange, body included, took longer than `Timeout.total`."""

    phase = "total"


class NetworkError(TransportError, OSError):
    """A socket-level failure: refused, reset, unreachable, closed."""

    def __init__(self, message: str, *, origin: str | None = None) -> None:
        # OSError's constructor takes (errno, strerror); keep it a plain message.
        HTTPError.__init__(self, message, origin=origin)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConnectError(NetworkError):
    """The TCP connection or TLS handshake to the origin failed."""


class ProxyError(ConnectError):
    """The proxy in front of the origin failed: it could not be reached, it refused the tunnel
    (an HTTP status to CONNECT, a SOCKS failure reply, rejected credentials), or its reply was
    malformed or cut short. Nothing reached the origin, so a retry is as safe as after any
    ConnectError, and `except ConnectError` catches this too.

    `proxy` is the proxy's URL without credentials ("http://127.0.0.1:3128"), `status` the HTTP
    status a proxy answered CONNECT with, `reply` the name of a SOCKS reply ("connection
    refused", "general failure", "authentication failed"). Neither fields nor message ever
    hold a password.

    >>> error = ProxyError("proxy http://127.0.0.1:3128 refused CONNECT to example.com:443: "
    ...                    "403 Forbidden", origin="https://example.com:443",
    ...                    proxy="http://127.0.0.1:3128", status=403)
    >>> isinstance(error, ConnectError), error.status, error.reply
    (True, 403, None)
    """

    def __init__(self, message: str, *, origin: str | None = None, proxy: str = "",
                 status: int | None = None, reply: str | None = None) -> None:
        super().__init__(message, origin=origin)
        self.proxy = proxy
        self.status = status
        self.reply = reply


class ReadError(NetworkError):
    """Receiving the response failed."""


class WriteError(NetworkError):
    """Sending the request failed."""


class ServerDisconnected(ReadError):
    """The server closed (or reset) the connection before a complete response arrived.

    `request_sent` says whether the whole request reached the socket, `response_started`
    whether any byte of a response arrived, and `reused` whether the connection had waited in
    the pool (it served a request before, or it sat idle before this one): then this is the
    keep-alive race, the server having dropped an idle connection just as we used it.
    """

    def __init__(self, message: str, *, origin: str | None = None, request_sent: bool = True,
                 response_started: bool = False, reused: bool = False) -> None:
        super().__init__(message, origin=origin)
        self.request_sent = request_sent
        self.response_started = response_started
        self.reused = reused


class StaleConnectionError(ServerDisconnected):
    """A reused keep-alive connection was closed by the server before any response byte,
    and the request was not retried because it is not idempotent: the server may or may not
    have processed it. Send an `Idempotency-Key` header, or allow the method in
    `Retry(allowed_methods=...)`, to have such requests retried."""


class ProtocolError(TransportError):
    """The HTTP exchange broke the protocol's rules."""


class RemoteProtocolError(ProtocolError):
    """The server sent something HTTP does not allow (`reason` names the rule it broke)."""

    def __init__(self, message: str, *, origin: str | None = None, reason: str = "") -> None:
        super().__init__(message, origin=origin)
        self.reason = reason


class StreamReset(ProtocolError):
    """The server ended this request's HTTP/2 stream without a complete response: it sent
    RST_STREAM, or a GOAWAY that leaves the stream out. Only this request failed; the
    connection and its other streams go on.

    `error_code` is the HTTP/2 error code (RFC 9113 section 7; `error_name` spells it:
    "REFUSED_STREAM", "CANCEL", ...), `stream_id` the stream. `processed` is False when the
    server said it did not process the request (REFUSED_STREAM, or a stream above a GOAWAY's
    last stream id): then it is safe to send it again, whatever its method, and the client
    does so at once, on another connection if need be.
    """

    def __init__(self, message: str, *, origin: str | None = None, error_code: int = 0,
                 stream_id: int = 0, processed: bool = True) -> None:
        super().__init__(message, origin=origin)
        self.error_code = error_code
        self.stream_id = stream_id
        self.processed = processed

    @property
    def error_name(self) -> str:
        return h2_error_name(self.error_code)


# The error codes of RFC 9113 section 7, by value.
_H2_ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
              "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
              "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
              "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


def h2_error_name(code: int) -> str:
    """"REFUSED_STREAM" for 7; "0x1f" for a code RFC 9113 does not define."""
    return _H2_ERRORS[code] if 0 <= code < len(_H2_ERRORS) else hex(code)


class InvalidURL(HTTPError, ValueError):
    """A URL poolhttp cannot send a request to (no scheme or host, bad characters, ...)."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class InvalidRequest(HTTPError, ValueError):
    """A request argument poolhttp cannot send: bad header, method or body type."""


class PoolClosed(HTTPError, RuntimeError):
    """The client was closed; it takes no more requests."""


class HTTPStatusError(HTTPError):
    """Raised by `Response.raise_for_status()` for 4xx and 5xx responses."""

    def __init__(self, message: str, *, request: Request, response: Response) -> None:
        super().__init__(message, origin=str(request.url.origin))
        self.request = request
        self.response = response


class DecodingError(HTTPError):
    """A response body could not be decoded as its `Content-Encoding` says: corrupt or
    truncated compressed data, or a coding (br, zstd) whose optional package is not installed
    (the message names the extra to install).

    Not a `TransportError`: the exchange itself completed, so nothing is retried and the
    connection was released normally (for a streamed body: closed, as the body was not read to
    its end). `iter_raw()` still gives the bytes as received.
    """


class ResponseTooLarge(HTTPError):
    """A body being read into memory (`.content`, `read()` / `aread()`) grew over the
    response's `max_content_size`; `limit` is that cap, in decoded bytes.

    Reading stops at the cap: a compressed body is never inflated past it, and a streamed
    response's connection is closed. Iterating the body (`iter_bytes()`, ...) has no cap.
    """

    def __init__(self, message: str, *, origin: str | None = None, limit: int = 0) -> None:
        super().__init__(message, origin=origin)
        self.limit = limit


class TooManyRedirects(HTTPError):
    """A redirect chain grew longer than `max_redirects` (the message names its length and
    the last URL)."""


class RequestNotReplayable(HTTPError, RuntimeError):
    """The request must be sent again (a 307/308 redirect, an auth challenge) but its body was
    streamed from an iterator that is consumed: pass bytes to have it replayed."""


class RetryError(HTTPError):
    """Every attempt the retry policy allowed failed; `errors` holds each attempt's error."""

    def __init__(self, message: str, *, origin: str | None = None,
                 errors: list[BaseException] | None = None) -> None:
        super().__init__(message, origin=origin)
        self.errors = list(errors or [])

    @property
    def last_error(self) -> BaseException | None:
        return self.errors[-1] if self.errors else None

"""httpx transports that carry httpx's requests over poolhttp's connection pool.

    import httpx
    from poolhttp.contrib.httpx import AsyncPoolTransport, PoolTransport

    client = httpx.Client(transport=PoolTransport(http2=True, retries=2))
    aclient = httpx.AsyncClient(transport=AsyncPoolTransport(limits=poolhttp.Limits(...)))

httpx keeps everything above the transport: building requests, redirects, cookies, auth,
event hooks and decoding the body. poolhttp sends what httpx built, header for header, and
hands back the body exactly as received (its own Content-Encoding decoding is not used).
Errors are httpx's own exception types, each chained to the poolhttp error it stands for.

This module imports httpx; `poolhttp` and `poolhttp.contrib` never import it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from .._async.client import AsyncClient
from .._config import Timeout
from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    HTTPError,
    InvalidRequest,
    InvalidURL,
    NetworkError,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RetryError,
    ServerDisconnected,
    TimeoutException,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .._headers import encode_header_pairs
from .._models import Request, Response, check_method
from .._sync.client import Client
from .._urls import URL, parse_url

__all__ = ["AsyncPoolTransport", "PoolTransport"]

# Client options that belong to httpx here: httpx builds the request and runs these steps
# itself, so poolhttp's versions would do them twice (or never, since the transport sends the
# request as httpx built it).
_HTTPX_OWNS = frozenset({"base_url", "headers", "follow_redirects", "max_redirects", "cookies",
                         "auth", "event_hooks", "max_content_size"})

# poolhttp's error tree -> httpx's, most specific first. A server closing the connection
# (before or during the response) is httpx's RemoteProtocolError, as with its own transport.
_ERRORS: tuple[tuple[type[Exception], type[httpx.RequestError]], ...] = (
    (ProxyError, httpx.ProxyError),
    (ConnectTimeout, httpx.ConnectTimeout),
    (ReadTimeout, httpx.ReadTimeout),
    (WriteTimeout, httpx.WriteTimeout),
    (PoolTimeout, httpx.PoolTimeout),
    (TimeoutException, httpx.TimeoutException),  # TotalTimeout: httpx has no total limit
    (ConnectError, httpx.ConnectError),
    (ServerDisconnected, httpx.RemoteProtocolError),
    (ReadError, httpx.ReadError),
    (WriteError, httpx.WriteError),
    (NetworkError, httpx.NetworkError),
    (ProtocolError, httpx.RemoteProtocolError),  # RemoteProtocolError, StreamReset
    (TransportError, httpx.TransportError),
    (InvalidURL, httpx.LocalProtocolError),
    (InvalidRequest, httpx.LocalProtocolError),
    (DecodingError, httpx.DecodingError),
)


def _httpx_error(exc: HTTPError, request: httpx.Request) -> Exception:
    """The httpx exception for a poolhttp one (a RetryError by its last attempt's error);
    errors outside the transport's part of the tree (PoolClosed, ...) are kept as they are."""
    kind: BaseException = exc
    if isinstance(exc, RetryError) and exc.last_error is not None:
        kind = exc.last_error
    for pool_type, httpx_type in _ERRORS:
        if isinstance(kind, pool_type):
            return httpx_type(str(exc), request=request)
    return exc


class _Translated:
    """`with _Translated(request):` raises httpx's exception for a poolhttp one."""

    __slots__ = ("_request",)

    def __init__(self, request: httpx.Request) -> None:
        self._request = request

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if isinstance(exc, HTTPError):
            mapped = _httpx_error(exc, self._request)
            if mapped is not exc:
                raise mapped from exc


def _pool_request(request: httpx.Request, *, sync: bool) -> Request:
    """The poolhttp request for `request`: its method, URL (the request target as httpx
    encoded it) and headers as httpx set them, and its body, known bytes or streamed with the
    size its Content-Length gives. The framing header is re-created by poolhttp from that."""
    url = request.url
    scheme = url.scheme
    if scheme not in ("http", "https"):
        if not scheme:
            raise httpx.UnsupportedProtocol(
                "Request URL is missing an 'http://' or 'https://' protocol.", request=request)
        raise httpx.UnsupportedProtocol(
            f"Request URL has an unsupported protocol '{scheme}://'.", request=request)
    with _Translated(request):
        method = check_method(request.method)
        target = parse_url(str(url))
        raw_path = url.raw_path
        if target.target != raw_path:  # keep httpx's encoding of the path and query
            target = URL(target)  # a copy: parse_url's result is shared
            target.target = raw_path
        headers = encode_header_pairs(request.headers.raw)
    length: int | None = None
    chunked = False
    kept: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise httpx.LocalProtocolError(f"invalid Content-Length {value!r}",
                                               request=request) from None
        elif lower == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        else:
            kept.append((name, value))
    if chunked:
        length = None  # Transfer-Encoding wins over Content-Length (RFC 9112 6.3)
    stream: Any = request.stream
    content: bytes | None = None
    if isinstance(stream, httpx.ByteStream):  # the body is known: poolhttp may resend it
        content = b"".join(stream)
        stream = None
        if chunked:
            stream, content = [content], None
        elif length is not None and length != len(content):
            raise httpx.LocalProtocolError(
                f"Content-Length {length} does not match the body's {len(content)} bytes",
                request=request)
        elif length is None and not content:
            content = None
    elif sync and not hasattr(stream, "__iter__"):
        raise RuntimeError("Attempted to send an async request with a sync Client instance.")
    return Request.build(method, target, kept, [], content, stream,
                         None if chunked else length)


def _extensions(response: Response) -> dict[str, Any]:
    return {"http_version": response.http_version.encode("ascii"),
            "reason_phrase": response.reason_phrase.encode("latin-1", "replace")}


class _TimeoutCache:
    """httpx's per-request `timeout` extension as poolhttp Timeouts, made once per distinct
    value (most programs use one or two); `total` stays the client's."""

    __slots__ = ("_made", "_total")

    def __init__(self, total: float | None) -> None:
        self._total = total
        self._made: dict[tuple[Any, ...], Timeout] = {}

    def get(self, extension: Any) -> Timeout | None:
        if not isinstance(extension, dict):
            return None
        key = (extension.get("connect"), extension.get("read"), extension.get("write"),
               extension.get("pool"))
        timeout = self._made.get(key)
        if timeout is None:
            if len(self._made) > 64:
                self._made.clear()
            timeout = self._made[key] = Timeout(connect=key[0], read=key[1], write=key[2],
                                                pool=key[3], total=self._total)
        return timeout


def _check_options(client: object, options: dict[str, Any]) -> None:
    if client is not None and options:
        raise TypeError(f"pass either client= or poolhttp client options, not both "
                        f"(got {sorted(options)})")
    owned = sorted(_HTTPX_OWNS & options.keys())
    if owned:
        raise TypeError(f"{', '.join(owned)}: set these on the httpx client, which builds the "
                        "requests and runs redirects, cookies, auth and hooks itself")


# -- sync ------------------------------------------------------------------------------------
class _SyncBody(httpx.SyncByteStream):
    """A poolhttp response's body as received, for httpx; closing it releases the connection
    (back to the pool when the body was read to the end)."""

    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        with _Translated(self._request):
            yield from self._response.iter_raw()

    def close(self) -> None:
        self._response.close()


class PoolTransport(httpx.BaseTransport):
    """An httpx transport over a `poolhttp.Client`: `httpx.Client(transport=PoolTransport())`.

    Give poolhttp client options (`limits=`, `http2=`, `verify=`, `cert=`, `proxy=`,
    `retries=`, `socket_options=`, `timeout=`, `trace=`...), or `client=` an existing
    `poolhttp.Client`. `close()` closes the client, and with it its pool, unless
    `close_client=False`. Options httpx owns (headers, redirects, cookies, auth, hooks) are
    refused: set them on the httpx client.
    """

    def __init__(self, client: Client | None = None, *, close_client: bool = True,
                 **options: Any) -> None:
        _check_options(client, options)
        if client is None:
            client = Client(**options)
        elif not isinstance(client, Client):
            raise TypeError(f"client must be a poolhttp.Client, not {type(client).__name__} "
                            "(an AsyncClient goes with AsyncPoolTransport)")
        self.client = client
        self._close_client = close_client
        self._timeouts = _TimeoutCache(client.timeout.total)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool_request = _pool_request(request, sync=True)
        client = self.client
        timeout = self._timeouts.get(request.extensions.get("timeout"))
        if timeout is None:
            timeout = client._resolve_timeout(None, pool_request)
        with _Translated(request):
            response = client._send(pool_request, timeout, True, None)
        return httpx.Response(response.status_code, headers=response.headers.raw,
                              stream=_SyncBody(response, request),
                              extensions=_extensions(response))

    def close(self) -> None:
        if self._close_client:
            self.client.close()


# -- async -----------------------------------------------------------------------------------
class _AsyncBody(httpx.AsyncByteStream):
    """A poolhttp response's body as received, for httpx.AsyncClient (see _SyncBody)."""

    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _Translated(self._request):
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class AsyncPoolTransport(httpx.AsyncBaseTransport):
    """An httpx transport over a `poolhttp.AsyncClient`:
    `httpx.AsyncClient(transport=AsyncPoolTransport())`, on asyncio or uvloop.

    Options as for `PoolTransport`; `client=` takes an existing `poolhttp.AsyncClient`, and
    `aclose()` closes it unless `close_client=False`. A request body may be an async or a
    sync iterator.
    """

    def __init__(self, client: AsyncClient | None = None, *, close_client: bool = True,
                 **options: Any) -> None:
        _check_options(client, options)
        if client is None:
            client = AsyncClient(**options)
        elif not isinstance(client, AsyncClient):
            raise TypeError(f"client must be a poolhttp.AsyncClient, not "
                            f"{type(client).__name__} (a Client goes with PoolTransport)")
        self.client = client
        self._close_client = close_client
        self._timeouts = _TimeoutCache(client.timeout.total)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool_request = _pool_request(request, sync=False)
        client = self.client
        timeout = self._timeouts.get(request.extensions.get("timeout"))
        if timeout is None:
            timeout = client._resolve_timeout(None, pool_request)
        with _Translated(request):
            response = await client._send(pool_request, timeout, True, None)
        return httpx.Response(response.status_code, headers=response.headers.raw,
                              stream=_AsyncBody(response, request),
                              extensions=_extensions(response))

    async def aclose(self) -> None:
        if self._close_client:
            await self.client.aclose()

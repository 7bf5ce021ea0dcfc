"""poolhttp: a fast, bounded and observable HTTP connection pool, with async and sync clients.

    import poolhttp

    async with poolhttp.AsyncClient() as client:          # asyncio / uvloop
        response = await client.get("https://example.org/")

    with poolhttp.Client() as client:                     # threads
        response = client.get("https://example.org/")
"""

from ._async.client import AsyncClient
from ._auth import Auth, AuthError, BasicAuth, DigestAuth
from ._config import Limits, Retry, Timeout
from ._cookies import Cookies
from ._core.pool import PoolStats
from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    HTTPError,
    HTTPStatusError,
    InvalidRequest,
    InvalidURL,
    NetworkError,
    PoolClosed,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    RequestNotReplayable,
    ResponseTooLarge,
    RetryError,
    ServerDisconnected,
    StaleConnectionError,
    StreamReset,
    TimeoutException,
    TooManyRedirects,
    TotalTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from ._headers import Headers
from ._models import Request, Response, ResponseNotRead, StreamConsumed
from ._mounts import Mount
from ._sync.client import Client
from ._urls import URL, Origin
from ._version import __version__

# Last, on purpose: `bulk` uses only the public API and imports it from `poolhttp`, so every
# name above must exist before it runs (import sorting keeps `.bulk` after the `._` modules).
from .bulk import BulkRequest, BulkResult, fetch_many, fetch_many_sync

__all__ = [
    "URL",
    "AsyncClient",
    "Auth",
    "AuthError",
    "BasicAuth",
    "BulkRequest",
    "BulkResult",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "Cookies",
    "DecodingError",
    "DigestAuth",
    "HTTPError",
    "HTTPStatusError",
    "Headers",
    "InvalidRequest",
    "InvalidURL",
    "Limits",
    "Mount",
    "NetworkError",
    "Origin",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "RequestNotReplayable",
    "Response",
    "ResponseNotRead",
    "ResponseTooLarge",
    "Retry",
    "RetryError",
    "ServerDisconnected",
    "StaleConnectionError",
    "StreamConsumed",
    "StreamReset",
    "Timeout",
    "TimeoutException",
    "TooManyRedirects",
    "TotalTimeout",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "__version__",
    "fetch_many",
    "fetch_many_sync",
]

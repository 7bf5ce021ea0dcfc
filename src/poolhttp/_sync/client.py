"""Client: the blocking HTTP client, one instance safe to share across threads."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from .._client_base import ClientBase, RequestContent
from .._config import Limits, Timeout, TimeoutTypes
from .._core.pool import PoolStats
from .._headers import HeaderTypes
from .._models import Request, Response
from .._tls import VerifyTypes
from .._urls import URL, QueryParams
from .connection import SyncConnection
from .pool import SyncPool

__all__ = ["Client"]


class Client(ClientBase[Response]):
    """A blocking HTTP/1.1 client with a bounded, observable connection pool.

    One instance is safe to share between threads, and should be: every thread then draws
    on the same pool.

    >>> with poolhttp.Client(timeout=5.0) as client:                  # doctest: +SKIP
    ...     response = client.get("https://example.org/")
    ...     response.raise_for_status()
    """

    def __init__(self, *, base_url: str | URL | None = None, headers: HeaderTypes | None = None,
                 limits: Limits = Limits(), timeout: TimeoutTypes = Timeout(),
                 verify: VerifyTypes = True, dns_ttl: float = 10.0, family: int = 0,
                 local_address: str | None = None) -> None:
        super().__init__(base_url=base_url, headers=headers, limits=limits, timeout=timeout,
                         verify=verify, dns_ttl=dns_ttl, family=family,
                         local_address=local_address)
        self._pool = SyncPool(self)
        self._closed = False

    def request(self, method: str, url: str | URL, *, params: QueryParams | None = None,
                headers: HeaderTypes | None = None, content: RequestContent = None,
                data: Mapping[str, Any] | None = None, json: Any = None,
                timeout: TimeoutTypes | Timeout = None) -> Response:
        """Send a request and read the whole response body."""
        request, head, body = self._build(method, url, params, headers, content, data, json,
                                          allow_async_body=False)
        return self._send(request, head, body,
                          self.timeout if timeout is None else Timeout.coerce(timeout), False)

    @contextmanager
    def stream(self, method: str, url: str | URL, *, params: QueryParams | None = None,
               headers: HeaderTypes | None = None, content: RequestContent = None,
               data: Mapping[str, Any] | None = None, json: Any = None,
               timeout: TimeoutTypes | Timeout = None) -> Iterator[Response]:
        """Send a request; the response's body is read as you iterate it.

        >>> with client.stream("GET", url) as response:             # doctest: +SKIP
        ...     for chunk in response.iter_bytes():
        ...         sink.write(chunk)

        The connection returns to the pool when the body has been read to the end; leaving
        the block early closes it instead.
        """
        request, head, body = self._build(method, url, params, headers, content, data, json,
                                          allow_async_body=False)
        response = self._send(request, head, body, self._resolve_timeout(timeout), True)
        try:
            yield response
        finally:
            response.close()

    def _send(self, request: Request, head: bytes, body: bytes | None, timeout: Timeout,
              stream: bool) -> Response:
        if self._closed:
            raise self._closed_error()
        started = time.monotonic()
        deadline = None if timeout.total is None else started + timeout.total
        conn = self._pool.acquire(request.url.origin, timeout, deadline)
        io: SyncConnection = conn.io
        try:
            io.send(request, head, body, timeout.write, timeout.read, deadline)
            return io.receive(request, started, stream)
        except BaseException:
            io.abandon()
            raise

    def stats(self) -> PoolStats:
        """A snapshot of the pool: open, idle, active and waiting counts, and totals."""
        with self._pool.lock:
            return self._pool.state.stats()

    def close(self) -> None:
        """Close every connection and fail requests still waiting for one. Idempotent."""
        self._closed = True
        self._pool.close()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"Client created at {self._created_at} was never closed; "
                          "use 'with' or 'client.close()'", ResourceWarning, stacklevel=1,
                          source=self)

"""OpenTelemetry metrics (and optional client spans) for a poolhttp client, named and
attributed as the OpenTelemetry semantic conventions for HTTP say.

    from poolhttp.contrib.otel import instrument
    handle = instrument(client)                       # the global meter provider
    handle = instrument(client, meter_provider=mp, tracer_provider=tp)
    handle.uninstrument()

Metrics (conventions' names, units and attributes):

- `http.client.open_connections` (UpDownCounter, observed): connections per origin and
  `http.connection.state` ("active": connecting or carrying requests, "idle"), read from
  `client.stats()` at each collection, so the two always agree;
- `http.client.connection.duration` (Histogram, s): each connection's life, from established
  to closed by the pool;
- `http.client.request.duration` (Histogram, s): from the call to the whole response (to the
  response head for `stream()`), retries and redirects included, with the status or
  `error.type`;
- `http.client.active_requests` (UpDownCounter): requests in progress;
- `http.client.request.time_in_queue` (Histogram, s): waiting for a connection (the pool's
  queue), the connecting of a new one not counted.

Attributes: `server.address`, `server.port`, `url.scheme`, `http.request.method`,
`http.response.status_code`, `error.type` (the exception's class name, or the status code for
a 4xx/5xx), `network.protocol.version` ("1.1", "2"). With a tracer provider, each request is
a CLIENT span named after its method, with the same attributes, `url.full` without
credentials, and the W3C trace context injected into its headers.

`opentelemetry-api` is the `otel` extra; this module imports it, poolhttp itself never does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .. import URL, AsyncClient, Client, Response
from .._core.records import Conn, PoolStats

__all__ = ["DURATION_BUCKETS", "Instrumentation", "instrument"]

# The conventions' advice for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0", "HTTP/2": "2"}
_SCOPE = "poolhttp"


def instrument(client: Client | AsyncClient, meter_provider: Any = None,
               tracer_provider: Any = None) -> Instrumentation:
    """Record `client`'s pool and requests as OpenTelemetry metrics (and spans, with a
    `tracer_provider`). Returns a handle whose `uninstrument()` undoes it."""
    if not isinstance(client, (Client, AsyncClient)):
        raise TypeError(f"instrument() takes a poolhttp Client or AsyncClient, not "
                        f"{type(client).__name__}")
    if getattr(client, "_otel", None) is not None:
        raise ValueError("this client is already instrumented: call uninstrument() first")
    return Instrumentation(client, meter_provider, tracer_provider)


def _server(origin_key: str) -> dict[str, Any]:
    """server.address/port and url.scheme of an origin key ("https://example.org:443")."""
    scheme, _, rest = origin_key.partition("://")
    host, _, port = rest.rpartition(":")
    return {"server.address": host.strip("[]"), "server.port": int(port), "url.scheme": scheme}


class _Connections:
    """The pool observer: the life of each established connection."""

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        self._opened: dict[int, tuple[float, dict[str, Any]]] = {}

    def opened(self, conn: Conn, now: float, multiplexed: bool) -> None:
        attributes = _server(conn.key.origin)
        attributes["network.protocol.version"] = "2" if multiplexed else "1.1"
        self._opened[conn.id] = (now, attributes)

    def closed(self, conn: Conn, now: float) -> None:
        opened = self._opened.pop(conn.id, None)
        if opened is not None:  # a connect that failed was never opened
            self._histogram.record(max(0.0, now - opened[0]), opened[1])


class _Request:
    """One request's measurements: a trace callback (chained before the caller's own)."""

    __slots__ = ("attributes", "connecting", "queue", "started", "user")

    def __init__(self, attributes: dict[str, Any], user: Callable[..., Any] | None) -> None:
        self.attributes = attributes
        self.user = user
        self.started = time.monotonic()
        self.connecting = 0.0
        self.queue: float | None = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event in ("dns.resolved", "tcp.connected", "tls.handshake", "proxy.tunnel"):
            self.connecting += info.get("seconds") or 0.0
        elif event == "connection.acquired" and self.queue is None:
            self.queue = max(0.0, info["time"] - self.started - self.connecting)
        if self.user is not None:
            self.user(event, info)


class Instrumentation:
    """What `instrument` installed on one client; `uninstrument()` removes it."""

    def __init__(self, client: Client | AsyncClient, meter_provider: Any,
                 tracer_provider: Any) -> None:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE)
        self._client = client
        self._tracer = None if tracer_provider is None else tracer_provider.get_tracer(_SCOPE)
        self._duration = meter.create_histogram(
            "http.client.request.duration", unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._queue = meter.create_histogram(
            "http.client.request.time_in_queue", unit="s",
            description="Time requests spent waiting for a connection in the pool's queue.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._active = meter.create_up_down_counter(
            "http.client.active_requests", unit="{request}",
            description="Number of active HTTP requests.")
        connection_duration = meter.create_histogram(
            "http.client.connection.duration", unit="s",
            description="The duration of the successfully established outbound HTTP "
                        "connections.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._gauge = meter.create_observable_up_down_counter(
            "http.client.open_connections", callbacks=[self._observe], unit="{connection}",
            description="Number of outbound HTTP connections that are currently active or "
                        "idle on the client.")
        pool: Any = client._pool
        self._observer = _Connections(connection_duration)
        self._previous_observer = pool.observer
        pool.observer = self._observer
        self._installed = True
        if isinstance(client, AsyncClient):
            self._wrap_async(client)
        else:
            self._wrap_sync(client)
        client._otel = self  # type: ignore[union-attr]

    def uninstrument(self) -> None:
        """Stop recording; the client works on as before. Idempotent."""
        if not self._installed:
            return
        self._installed = False
        client = self._client
        for name in ("request", "stream"):
            client.__dict__.pop(name, None)
        client._pool.observer = self._previous_observer
        client._otel = None  # type: ignore[union-attr]

    # -- open connections, from the pool's own figures ---------------------------------------
    def _observe(self, options: CallbackOptions) -> Iterator[Observation]:
        if not self._installed:
            return
        stats = self._stats()
        for origin, figures in stats.per_host.items():
            base = _server(origin.split(" ", 1)[0])  # a proxied key names its proxy after
            idle = figures.idle
            yield Observation(figures.connections - idle,
                              {**base, "http.connection.state": "active"})
            yield Observation(idle, {**base, "http.connection.state": "idle"})

    def _stats(self) -> PoolStats:
        # Collection runs on the reader's thread; an AsyncClient's pool changes on its loop's.
        # A snapshot that met a change mid-way is taken again.
        for _ in range(10):
            try:
                return self._client.stats()
            except RuntimeError:  # a dict changed size while it was being read
                continue
        return self._client.stats()

    # -- requests --------------------------------------------------------------------------
    def _start(self, method: str, url: Any, kwargs: dict[str, Any]) -> tuple[_Request, Any]:
        target = _target(self._client, url)
        attributes = {"http.request.method": method.upper(), **_server(target.origin.key)}
        measure = _Request(attributes, kwargs.get("trace") or self._client.trace)
        kwargs["trace"] = measure
        span = None
        if self._tracer is not None:
            span = self._tracer.start_span(method.upper(), kind=trace.SpanKind.CLIENT,
                                           attributes={**attributes,
                                                       "url.full": _shown(target)})
            headers = dict(kwargs.get("headers") or {})
            propagate.inject(headers, context=trace.set_span_in_context(span))
            kwargs["headers"] = headers
        self._active.add(1, _active_attributes(attributes))
        return measure, span

    def _finish(self, measure: _Request, span: Any, response: Response | None,
                error: BaseException | None) -> None:
        attributes = dict(measure.attributes)
        self._active.add(-1, _active_attributes(attributes))
        if response is not None:
            attributes["http.response.status_code"] = response.status_code
            attributes["network.protocol.version"] = _VERSIONS.get(response.http_version,
                                                                   response.http_version)
            if response.status_code >= 400:
                attributes["error.type"] = str(response.status_code)
        elif error is not None:
            attributes["error.type"] = type(error).__name__
        self._duration.record(time.monotonic() - measure.started, attributes)
        if measure.queue is not None:
            queued = {k: v for k, v in attributes.items()
                      if k not in ("http.response.status_code", "error.type")}
            self._queue.record(measure.queue, queued)
        if span is not None:
            span.set_attributes(attributes)
            if "error.type" in attributes:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            if error is not None:
                span.record_exception(error)
            span.end()

    def _wrap_sync(self, client: Client) -> None:
        request, stream = client.request, client.stream

        def instrumented_request(method: str, url: Any, **kwargs: Any) -> Response:
            measure, span = self._start(method, url, kwargs)
            try:
                response = request(method, url, **kwargs)
            except BaseException as exc:
                self._finish(measure, span, None, exc)
                raise
            self._finish(measure, span, response, None)
            return response

        @contextlib.contextmanager
        def instrumented_stream(method: str, url: Any, **kwargs: Any) -> Iterator[Response]:
            measure, span = self._start(method, url, kwargs)
            try:
                context = stream(method, url, **kwargs)
                response = context.__enter__()
            except BaseException as exc:
                self._finish(measure, span, None, exc)
                raise
            self._finish(measure, span, response, None)
            with contextlib.ExitStack() as stack:
                stack.push(context)
                yield response

        client.request = instrumented_request  # type: ignore[method-assign]
        client.stream = instrumented_stream  # type: ignore[method-assign]

    def _wrap_async(self, client: AsyncClient) -> None:
        request, stream = client.request, client.stream

        async def instrumented_request(method: str, url: Any, **kwargs: Any) -> Response:
            measure, span = self._start(method, url, kwargs)
            try:
                response = await request(method, url, **kwargs)
            except BaseException as exc:
                self._finish(measure, span, None, exc)
                raise
            self._finish(measure, span, response, None)
            return response

        @contextlib.asynccontextmanager
        async def instrumented_stream(method: str, url: Any,
                                      **kwargs: Any) -> AsyncIterator[Response]:
            measure, span = self._start(method, url, kwargs)
            context = stream(method, url, **kwargs)
            try:
                response = await context.__aenter__()
            except BaseException as exc:
                self._finish(measure, span, None, exc)
                raise
            self._finish(measure, span, response, None)
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_exit(context)
                yield response

        client.request = instrumented_request  # type: ignore[method-assign]
        client.stream = instrumented_stream  # type: ignore[method-assign, assignment]


def _active_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: attributes[k] for k in ("http.request.method", "server.address", "server.port",
                                       "url.scheme")}


def _target(client: Client | AsyncClient, url: Any) -> URL:
    """The URL a request goes to, as the client resolves it (a bad one is the client's to
    refuse: the call goes on and raises its own error)."""
    if isinstance(url, URL):
        return url
    text = str(url)
    base = client.base_url
    return base.join(text) if base is not None and "://" not in text else URL(text)


def _shown(url: URL) -> str:
    """url.full without credentials (the conventions say they must not be recorded)."""
    text = str(url)
    return text.replace(f"//{url.userinfo}@", "//", 1) if url.userinfo else text


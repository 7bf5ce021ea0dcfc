"""OpenTelemetry metrics and spans (`poolhttp.contrib.otel`) against real servers: the figures
must agree with `client.stats()` and with nginx's own count of connections."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import poolhttp
from poolhttp.contrib.otel import instrument
from tests.support.httpbin import Httpbin
from tests.support.nginx import Nginx

Points = dict[str, list[Any]]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    yield reader
    reader.shutdown()


def points(reader: InMemoryMetricReader) -> Points:
    """Every data point of every instrument, by metric name."""
    data = reader.get_metrics_data()
    found: Points = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def by_state(found: Points) -> dict[str, int]:
    totals: dict[str, int] = {}
    for point in found.get("http.client.open_connections", []):
        state = point.attributes["http.connection.state"]
        totals[state] = totals.get(state, 0) + point.value
    return totals


def test_sync_client_metrics_agree_with_stats_and_nginx(nginx: Nginx,
                                                        reader: InMemoryMetricReader) -> None:
    url = nginx.url("/")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    before = nginx.server_stats()
    client = poolhttp.Client(limits=poolhttp.Limits(max_connections=4))
    handle = instrument(client, meter_provider=MeterProvider(metric_readers=[reader]))
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: client.get(url).status_code, range(200)))
    assert statuses == [200] * 200
    found = points(reader)
    stats = client.stats()
    opened = nginx.server_stats().since(before).accepted
    # Open connections: as the pool counts them, and as nginx accepted them.
    assert by_state(found) == {"active": stats.connections - stats.idle, "idle": stats.idle}
    assert stats.connections == opened == stats.created
    (duration,) = found["http.client.request.duration"]
    assert duration.count == 200
    assert dict(duration.attributes) == {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": port,
        "url.scheme": "http", "http.response.status_code": 200,
        "network.protocol.version": "1.1"}
    assert 0 < duration.sum < 200 * 5
    (queue,) = found["http.client.request.time_in_queue"]
    assert queue.count == 200
    assert queue.max > 0  # 16 threads, 4 connections: requests waited
    assert sum(p.value for p in found["http.client.active_requests"]) == 0
    assert "http.client.connection.duration" not in found  # none closed yet
    client.close()
    found = points(reader)
    (lives,) = found["http.client.connection.duration"]
    assert lives.count == opened  # every connection nginx accepted, closed by the pool
    assert by_state(found) == {"active": 0, "idle": 0}
    handle.uninstrument()
    assert "request" not in client.__dict__


def test_async_client_metrics_and_errors(nginx: Nginx, reader: InMemoryMetricReader,
                                         loop_kind: str) -> None:
    async def main() -> poolhttp.PoolStats:
        async with poolhttp.AsyncClient(limits=poolhttp.Limits(max_connections=8)) as client:
            instrument(client, meter_provider=MeterProvider(metric_readers=[reader]))
            responses = await asyncio.gather(*(client.get(nginx.url("/")) for _ in range(64)))
            assert {r.status_code for r in responses} == {200}
            assert (await client.get(nginx.url("/missing"))).status_code == 404
            with pytest.raises(poolhttp.ConnectError):
                await client.get("http://127.0.0.1:1/")
            async with client.stream("GET", nginx.url("/16k")) as response:
                assert len(await response.aread()) == 16 * 1024
            stats = client.stats()
            assert by_state(points(reader)) == {"active": stats.connections - stats.idle,
                                                "idle": stats.idle}
            return stats

    stats = run(main(), loop_kind)
    found = points(reader)
    kinds = {(p.attributes.get("http.response.status_code"), p.attributes.get("error.type")):
             p.count for p in found["http.client.request.duration"]}
    assert kinds == {(200, None): 65, (404, "404"): 1, (None, "ConnectError"): 1}
    (lives,) = found["http.client.connection.duration"]
    assert lives.count == stats.created  # the failed connect was never a connection
    assert sum(p.value for p in found["http.client.active_requests"]) == 0


def test_http2_connections_say_version_2(nginx: Nginx, reader: InMemoryMetricReader) -> None:
    assert nginx.certs is not None
    with poolhttp.Client(http2=True, verify=str(nginx.certs.ca_path)) as client:
        instrument(client, meter_provider=MeterProvider(metric_readers=[reader]))
        assert client.get(nginx.https_url("/")).http_version == "HTTP/2"
    found = points(reader)
    (duration,) = found["http.client.request.duration"]
    assert duration.attributes["network.protocol.version"] == "2"
    assert duration.attributes["url.scheme"] == "https"
    (lives,) = found["http.client.connection.duration"]
    assert lives.attributes["network.protocol.version"] == "2"


def test_spans_carry_the_conventions_and_the_trace_context(httpbin: Httpbin,
                                                           reader: InMemoryMetricReader) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with poolhttp.Client() as client:
        instrument(client, meter_provider=MeterProvider(metric_readers=[reader]),
                   tracer_provider=tracer_provider)
        url = httpbin.url("/headers").replace("http://", "http://ada:s3cret@")
        echoed = json.loads(client.get(url).content)["headers"]
        assert client.get(httpbin.url("/status/503")).status_code == 503
    first, second = exporter.get_finished_spans()
    assert (first.name, first.kind) == ("GET", SpanKind.CLIENT)
    assert first.attributes is not None
    assert first.attributes["url.full"] == httpbin.url("/headers")  # no credentials
    assert "s3cret" not in json.dumps(dict(first.attributes))
    assert first.attributes["http.response.status_code"] == 200
    context = first.get_span_context()
    assert context is not None
    assert echoed["Traceparent"].split("-")[1] == f"{context.trace_id:032x}"
    assert second.attributes is not None
    assert second.attributes["error.type"] == "503"
    assert not second.status.is_ok


def test_instrument_refuses_what_it_cannot_take() -> None:
    with pytest.raises(TypeError, match="poolhttp Client or AsyncClient"):
        instrument(object())  # type: ignore[arg-type]
    with poolhttp.Client() as client:
        handle = instrument(client, meter_provider=MeterProvider())
        with pytest.raises(ValueError, match="already instrumented"):
            instrument(client)
        handle.uninstrument()
        handle.uninstrument()  # idempotent
        instrument(client, meter_provider=MeterProvider()).uninstrument()


def test_poolhttp_imports_no_opentelemetry() -> None:
    code = ("import sys, poolhttp, poolhttp.contrib\n"
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def run(coroutine: Any, loop_kind: str) -> Any:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)

"""Self-tests of the httpbin fixture: it serves over HTTP and HTTPS, to both clients, and
stopping it leaves no process behind."""

from __future__ import annotations

import asyncio
import os

import pytest

import poolhttp
from tests.support.certs import CertBundle
from tests.support.httpbin import Httpbin, HttpbinError


def test_get_and_status(httpbin: Httpbin) -> None:
    with poolhttp.Client() as client:
        response = client.get(httpbin.url("/get?answer=42"), headers={"X-Probe": "yes"})
        assert response.status_code == 200
        body = response.json()
        assert body["args"] == {"answer": "42"}
        assert body["headers"]["X-Probe"] == "yes"
        assert client.get(httpbin.url("/status/418")).status_code == 418


def test_https_with_ca(httpbin: Httpbin) -> None:
    assert httpbin.https_url("/get").startswith("https://127.0.0.1:")
    with poolhttp.Client(verify=httpbin.ca_path) as client:
        response = client.get(httpbin.https_url("/get"))
    assert response.status_code == 200
    assert response.json()["url"] == httpbin.https_url("/get")


def test_https_needs_the_ca(httpbin: Httpbin) -> None:
    with poolhttp.Client() as client, pytest.raises(poolhttp.ConnectError):
        client.get(httpbin.https_url("/get"))


async def test_async_client(httpbin: Httpbin) -> None:
    async with poolhttp.AsyncClient(verify=httpbin.ca_path) as client:
        plain, teapot, secure = await asyncio.gather(
            client.get(httpbin.url("/get")),
            client.get(httpbin.url("/status/418")),
            client.get(httpbin.https_url("/get")),
        )
    assert plain.status_code == 200
    assert plain.json()["url"] == httpbin.url("/get")
    assert teapot.status_code == 418
    assert secure.status_code == 200


async def test_concurrent_slow_requests(httpbin: Httpbin) -> None:
    # Four sync workers: four requests that each take 0.5 s are served side by side.
    loop = asyncio.get_running_loop()
    async with poolhttp.AsyncClient() as client:
        started = loop.time()
        responses = await asyncio.gather(
            *(client.get(httpbin.url("/delay/0.5")) for _ in range(4)))
        elapsed = loop.time() - started
    assert [r.status_code for r in responses] == [200] * 4
    assert elapsed < 1.5


def test_post_form(httpbin: Httpbin) -> None:
    with poolhttp.Client() as client:
        response = client.post(httpbin.url("/post"), data={"name": "value"})
    assert response.json()["form"] == {"name": "value"}


def test_stop_leaves_no_process(certs: CertBundle) -> None:
    server = Httpbin(certs=certs, workers=2)
    with server:
        with poolhttp.Client() as client:
            assert client.get(server.url("/get")).status_code == 200
        pids = server.pids()
        assert len(pids) >= 3  # two masters and at least one worker
        url = server.url("/get")
    assert server.pids() == []
    assert [pid for pid in pids if _alive(pid)] == []
    with pytest.raises(HttpbinError):
        server.url("/get")
    with poolhttp.Client() as client, pytest.raises(poolhttp.ConnectError):
        client.get(url)


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a reused pid would be a false alarm, but
    not within the moment this test takes)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_no_descriptor_left_after_stop(certs: CertBundle) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with Httpbin(certs=certs, workers=1):
        pass
    assert len(os.listdir("/proc/self/fd")) == before

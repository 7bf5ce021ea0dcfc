"""No leaks: file descriptors, memory while streaming, and an unclosed client is reported."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import warnings

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support import no_fd_leak, open_fd_count
from tests.support.nginx import Nginx


def test_descriptors_return_to_baseline_after_close(client_kind: str, nginx: Nginx) -> None:
    facade_fds = 0
    if client_kind != "sync":  # the facade's own loop and thread hold a few descriptors
        baseline = open_fd_count()
        make_client(client_kind).shutdown()
        facade_fds = max(0, open_fd_count() - baseline)
    with no_fd_leak(slack=facade_fds):
        client = make_client(client_kind, verify=nginx.ca_path,
                             limits=poolhttp.Limits(max_connections=8))
        try:
            for index in range(3):
                client.get(nginx.url("/", index))
            client.get(nginx.https_url("/"))
            client.get(nginx.url("/", keepalive=False))
            client.get(nginx.url("/", 1))
            with client.stream("GET", nginx.url("/1m")) as response:
                next(iter(response.iter_bytes()))  # abandoned half-way
            stats = client.stats()
            # Created: three plain origins, https, keep-alive-off (closed after its reply).
            # The stream reused origin 0's connection and closed it when abandoned.
            assert (stats.created, stats.connections, stats.closed) == (5, 3, 2)
        finally:
            if client_kind == "sync":
                client.close()
            else:
                client.shutdown()
        nginx.wait_for_stats(lambda stats: stats.active == 0)


async def test_aclose_closes_every_socket_before_returning(nginx: Nginx) -> None:
    async with poolhttp.AsyncClient() as warm_up:  # uvloop opens /dev/null on first use
        await warm_up.get(nginx.url("/"))
    before = open_fd_count()
    client = poolhttp.AsyncClient(verify=nginx.ca_path)
    for index in range(3):
        await client.get(nginx.url("/", index))
    await client.get(nginx.https_url("/"))
    assert open_fd_count() >= before + 4
    await client.aclose()
    assert open_fd_count() == before  # at once: aclose() waited for the transports
    assert client.is_closed


def test_unclosed_client_warns_once_naming_where_it_was_created(nginx: Nginx) -> None:
    for make in (poolhttp.Client, poolhttp.AsyncClient):
        client = make()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client
            gc.collect()
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert len(messages) == 1, messages
        assert "was never closed" in messages[0]
        assert "test_resources.py" in messages[0]


def test_closed_client_does_not_warn() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with poolhttp.Client():
            pass
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


STREAM_SCRIPT = """
import asyncio, sys, poolhttp
url, kind = sys.argv[1], sys.argv[2]
total = 0
if kind == "sync":
    with poolhttp.Client() as client, client.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            total += len(chunk)
else:
    if kind == "uvloop":
        import uvloop
        uvloop.install()
    async def main():
        global total
        async with poolhttp.AsyncClient() as client:
            async with client.stream("GET", url) as response:
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
    asyncio.run(main())
# Peak resident memory of this process image. Not ru_maxrss: Linux carries that over
# execve() from the forked parent, so it would report the test runner's own size.
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(total, peak_kb // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sync", "asyncio", "uvloop"])
def test_1gib_streamed_download_stays_under_100mb(nginx: Nginx, kind: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STREAM_SCRIPT), nginx.url("/big"), kind],
        capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    size, peak_mb = map(int, result.stdout.split())
    assert size == 1 << 30
    assert peak_mb < 100, f"peak RSS {peak_mb} MB while streaming 1 GiB"

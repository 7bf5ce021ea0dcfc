"""One AsyncClient belongs to one event loop; a forked child never shares sockets."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading

import pytest

import poolhttp
from tests.support.scripted import ServerFactory, echo_handler


def test_async_client_on_a_second_loop_raises_a_clear_error(scripted_server: ServerFactory) -> None:
    server = scripted_server()
    first = asyncio.new_event_loop()
    try:
        client = first.run_until_complete(_make_client())
        first.run_until_complete(client.get(server.url()))  # a connection on the first loop
        with pytest.raises(RuntimeError, match="connections on another event loop"):
            asyncio.run(client.get(server.url()))
        first.run_until_complete(client.aclose())
    finally:
        first.close()


def test_aclose_after_its_loop_was_closed_does_not_crash(scripted_server: ServerFactory) -> None:
    """A mistake: the loop ended before the client was closed. aclose() from another loop
    settles the books without touching the dead loop; the orphaned transport is reported
    by asyncio itself when collected."""
    server = scripted_server()
    first = asyncio.new_event_loop()
    client = first.run_until_complete(_make_client())
    first.run_until_complete(client.get(server.url()))
    first.close()

    def close_then_collect() -> None:
        asyncio.run(client.aclose())
        gc.collect()

    with pytest.warns(ResourceWarning, match="unclosed"):
        close_then_collect()
    assert client.stats().connections == 0
    with pytest.raises(poolhttp.PoolClosed):
        asyncio.run(client.get(server.url()))


def test_async_client_from_another_thread_raises_instead_of_hanging(
        scripted_server: ServerFactory) -> None:
    server = scripted_server()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        client = asyncio.run_coroutine_threadsafe(_make_client(), loop).result(5)
        asyncio.run_coroutine_threadsafe(client.get(server.url()), loop).result(5)
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(asyncio.wait_for(client.get(server.url()), 5))
        # Closing from this thread hands the work to the client's own loop.
        asyncio.run(client.aclose())
        assert client.stats().connections == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _make_client() -> poolhttp.AsyncClient:
    return poolhttp.AsyncClient()


def test_async_client_moves_to_a_new_loop_once_its_connections_are_gone(
        scripted_server: ServerFactory) -> None:
    server = scripted_server()
    client = poolhttp.AsyncClient(limits=poolhttp.Limits(keepalive_expiry=0))
    asyncio.run(client.get(server.url()))  # keep-alive off: nothing stays open
    assert client.stats().connections == 0
    assert asyncio.run(client.get(server.url())).status_code == 200
    asyncio.run(client.aclose())


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_forked_child_opens_its_own_connections(scripted_server: ServerFactory) -> None:
    server = scripted_server(echo_handler)
    with poolhttp.Client() as client:
        first = json.loads(client.get(server.url()).content)["connection_index"]
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report which connection served it, then leave at once
            try:
                index = json.loads(client.get(server.url()).content)["connection_index"]
                os.write(writer, str(index).encode())
            finally:
                os._exit(0)
        os.close(writer)
        child_index = int(os.read(reader, 100) or b"-1")
        os.close(reader)
        os.waitpid(pid, 0)
        # The parent's connection is intact and still its own.
        again = json.loads(client.get(server.url()).content)["connection_index"]
    assert child_index not in (-1, first)
    assert again == first
    assert server.accepted == 2

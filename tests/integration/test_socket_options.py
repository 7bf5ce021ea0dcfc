"""socket_options= applied to every new socket (checked with getsockopt on the live socket),
local_address kept, and the errors of a bad option."""

from __future__ import annotations

import os
import socket

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.nginx import Nginx

OPTIONS = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
           (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 33),
           (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 7)]


def sockets_to(port: int) -> list[socket.socket]:
    """This process's TCP sockets connected to 127.0.0.1:`port`, each once (duplicates of
    their descriptors: close them)."""
    found: list[socket.socket] = []
    seen: set[int] = set()
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        try:
            inode = os.fstat(fd).st_ino
        except OSError:  # the descriptor that listed the directory, closed since
            continue
        if inode in seen:
            continue
        seen.add(inode)
        copy = os.dup(fd)
        try:
            sock = socket.socket(fileno=copy)
        except OSError:  # not a socket: the copy is ours to close
            os.close(copy)
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.getpeername()[1:2] == (port,):
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found


def test_socket_options_are_set_on_every_new_connection(client_kind: str,
                                                         nginx: Nginx) -> None:
    with make_client(client_kind, socket_options=OPTIONS,
                     limits=poolhttp.Limits(max_keepalive_connections=10)) as client:
        for _ in range(3):
            assert client.get(nginx.url()).status_code == 200
        live = sockets_to(nginx.port())
        try:
            assert len(live) == 1  # one pooled connection, idle
            sock = live[0]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 33
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # ours, kept
        finally:
            for sock in live:
                sock.close()


def test_without_socket_options_the_defaults_stay(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind) as client:
        assert client.get(nginx.url()).status_code == 200
        live = sockets_to(nginx.port())
        try:
            assert len(live) == 1
            assert live[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        finally:
            for sock in live:
                sock.close()


def test_local_address_with_socket_options(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind, local_address="127.0.0.2", socket_options=OPTIONS) as client:
        assert client.get(nginx.url()).status_code == 200
        live = sockets_to(nginx.port())
        try:
            assert [sock.getsockname()[0] for sock in live] == ["127.0.0.2"]
        finally:
            for sock in live:
                sock.close()


@pytest.mark.parametrize(("options", "error", "words"), [
    ([(socket.SOL_SOCKET, 123456, 1)], ValueError, "setsockopt(1, 123456, 1) failed"),
    ([(socket.SOL_SOCKET, socket.SO_KEEPALIVE)], TypeError, "(level, option, value)"),
    ([("SOL_SOCKET", socket.SO_KEEPALIVE, 1)], TypeError, "(level, option, value)"),
    ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), TypeError, "(level, option, value)"),
    ("SO_KEEPALIVE", TypeError, "list of (level, option, value)"),
])
def test_a_bad_socket_option_is_refused_at_construction(options: object,
                                                        error: type[Exception],
                                                        words: str) -> None:
    for client_class in (poolhttp.Client, poolhttp.AsyncClient):
        with pytest.raises(error) as caught:
            client_class(socket_options=options)  # type: ignore[arg-type]
        assert words in str(caught.value)

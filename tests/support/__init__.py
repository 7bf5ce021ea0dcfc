"""Test infrastructure: real servers on loopback sockets, and small helpers for the tests.

    nginx.py     a private nginx (fast, well-behaved server; exact connection counters)
    scripted.py  in-process servers with scripted replies and faults, byte for byte
    certs.py     a throw-away CA and server certificate for the HTTPS tests, and a client CA
                 and client certificates for the mutual-TLS ones
    proxies.py   tinyproxy, microsocks, dante and stunnel as child processes, and a scripted
                 proxy (HTTP, SOCKS4/4a, SOCKS5, optionally over TLS) for exact bytes and faults

See docs/testing.md for how the fixtures in tests/conftest.py use them.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["listening_socket", "no_fd_leak", "open_fd_count", "poll_until"]


def _fd_directory() -> str:
    return "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def open_fd_count() -> int:
    """The number of file descriptors this process has open right now.

    Includes the descriptor used to list them, which is the same in every call, so only
    differences between two counts are meaningful.
    """
    return len(os.listdir(_fd_directory()))


@contextlib.contextmanager
def no_fd_leak(slack: int = 0, timeout: float = 2.0) -> Iterator[None]:
    """Fail if the block leaves more than `slack` extra descriptors open.

    Sockets can be released a moment after the code returns (garbage collection, a loop
    closing a transport on its next iteration), so the check retries until `timeout`.
    Server-side sockets of in-process scripted servers count too: wait for the server's
    `active == 0` inside the block when using one.
    """
    before = open_fd_count()
    yield
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = open_fd_count()
        if now <= before + slack:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"file descriptors leaked: {now - before} more open than before ({before} -> {now})"
            )
        time.sleep(0.02)


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on a free port of `host`, for a server process to inherit
    (`fd://`): the port is known before the server starts, and nobody can take it meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def poll_until(read: Callable[[], T], predicate: Callable[[T], bool], timeout: float,
               what: str) -> T:
    """Call `read` every 10 ms until `predicate` holds for what it returns (returned);
    TimeoutError naming `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if predicate(value):
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the {what} did not reach the expected state: {value}")
        time.sleep(0.01)

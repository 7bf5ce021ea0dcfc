"""The blocking dialer: a TCP connection to the first address that answers (RFC 8305).

With one address, or `delay` 0, the addresses are tried one after the other with blocking
connects bounded by the plan's time left, as a plain connect would. Otherwise the attempts
are non-blocking sockets started `delay` apart (see _core/eyeballs.py) and watched by one
selector in the calling thread, no threads: a connect has ended when its socket turns
writable, and SO_ERROR then tells a success from a failure. The first to connect wins;
every other socket is closed before `open_tcp` returns or raises, whatever it raises.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable

from .._core.connect import ConnectPlan
from .._core.dns import Address
from .._core.eyeballs import Stagger

__all__ = ["open_tcp"]

Setup = Callable[[socket.socket], None]

# What a non-blocking connect_ex returns while the handshake is under way (Windows says
# EWOULDBLOCK).
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK})


def open_tcp(plan: ConnectPlan, addresses: list[Address], *, delay: float,
             setup: Setup) -> tuple[socket.socket, Address]:
    """Connect to one of the addresses `plan` hands out (`addresses` is the list given to
    `plan.resolved`; only its length is read here, to choose between racing and not), all
    within the plan's deadline, on the `time.monotonic()` clock.

    Each attempt's socket is new and passed to `setup` before it connects (an OSError from
    `setup` fails that attempt). Failed attempts are recorded with `plan.failed`; when none
    connects in time, raises `plan.error()`. Returns the connected socket, in blocking mode
    with no time-out, and its address: the caller owns it (and calls `plan.connected`).
    """
    if delay <= 0 or len(addresses) < 2:
        return _one_by_one(plan, setup)
    return _Race(plan, delay, setup).run()


def _new_socket(address: Address, setup: Setup) -> socket.socket:
    sock = socket.socket(address[0], socket.SOCK_STREAM)
    try:
        setup(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _one_by_one(plan: ConnectPlan, setup: Setup) -> tuple[socket.socket, Address]:
    while (address := plan.next_address(time.monotonic())) is not None:
        try:
            sock = _new_socket(address, setup)
        except OSError as exc:
            plan.failed(address, exc)
            continue
        try:
            # A time-out here has no errno: the plan takes it for its own deadline.
            sock.settimeout(plan.remaining(time.monotonic()))
            sock.connect(address[1])
        except OSError as exc:
            sock.close()
            plan.failed(address, exc)
            continue
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock, address
    raise plan.error()


class _Race:
    """Staggered non-blocking connects in one selector; the first to connect wins."""

    def __init__(self, plan: ConnectPlan, delay: float, setup: Setup) -> None:
        self.plan = plan
        self.setup = setup
        self.stagger = Stagger(delay)
        # The sockets racing, each registered with (itself, its address, attempt number).
        self.selector = selectors.DefaultSelector()

    def run(self) -> tuple[socket.socket, Address]:
        plan, stagger = self.plan, self.stagger
        more = True  # addresses left to try
        now = time.monotonic()
        try:
            while plan.end is None or now < plan.end:
                if more and stagger.is_due(now):
                    address = plan.next_address(now)
                    more = address is not None
                    if address is not None and (won := self._start(address, now)):
                        return won
                    now = time.monotonic()
                    continue
                if not self.selector.get_map():
                    raise plan.error()
                wake = stagger.wake(plan.end, more)
                ready = self.selector.select(None if wake is None else max(0.0, wake - now))
                now = time.monotonic()
                if ready:
                    if won := self._settle([key for key, _ in ready]):
                        return won
                elif wake is not None:
                    now = max(now, wake)  # slept until `wake`, whatever the clock's grain
            plan.next_address(now)  # past the deadline: the plan records that time is up
            raise plan.error()
        finally:
            self._close()

    def _start(self, address: Address, now: float) -> tuple[socket.socket, Address] | None:
        """Start an attempt on `address`; the socket and address if it connected at once."""
        number = self.stagger.started(now)
        try:
            sock = _new_socket(address, self.setup)
        except OSError as exc:
            self._failed(address, number, exc)
            return None
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address[1])
            if code and code not in _IN_PROGRESS:  # refused at once, say, on loopback
                raise OSError(code, os.strerror(code))
        except OSError as exc:
            sock.close()
            self._failed(address, number, exc)
            return None
        except BaseException:
            sock.close()
            raise
        if code == 0:
            return self._won(sock, address)
        self.selector.register(sock, selectors.EVENT_WRITE, (sock, address, number))
        return None

    def _settle(self, keys: list[selectors.SelectorKey]
                ) -> tuple[socket.socket, Address] | None:
        """Take the attempts whose connect ended out of the race: failures are recorded,
        the first success (by start order) wins; the others are closed by `_close`."""
        for key in sorted(keys, key=lambda key: key.data[2]):
            sock, address, number = key.data
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            self.selector.unregister(sock)
            if code == 0:
                return self._won(sock, address)
            sock.close()
            self._failed(address, number, OSError(code, os.strerror(code)))
        return None

    def _won(self, sock: socket.socket, address: Address) -> tuple[socket.socket, Address]:
        sock.setblocking(True)  # blocking, no time-out: the caller sets what it needs
        return sock, address

    def _failed(self, address: Address, number: int, exc: OSError) -> None:
        self.plan.failed(address, exc)
        self.stagger.failed(number)

    def _close(self) -> None:
        """Close every socket still racing, and the selector."""
        for key in list(self.selector.get_map().values()):
            sock: socket.socket = key.data[0]
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()

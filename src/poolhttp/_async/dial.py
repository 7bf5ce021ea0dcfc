"""The asyncio dialer: a TCP connection to the first address that answers (RFC 8305).

With one address, or `delay` 0, the addresses are tried one after the other in the caller's
task, as a plain connect would: no task, no timer. Otherwise each attempt is a task of its
own, started `delay` apart (see _core/eyeballs.py), and the first to connect wins.

Who owns what. Every socket belongs to the race until one is handed back: a loser, a failed
attempt and, when the race ends in an error or a cancellation, every attempt still running
is closed here. A running attempt is cancelled first and its socket closed only once its task
has ended: the loop has then stopped watching the descriptor, so closing it cannot hit a new
socket that reuses its number. The race waits for that before it returns or raises, so no
attempt task outlives `open_tcp`; if the caller is cancelled once more meanwhile, the closing
is left to the tasks' done callbacks (and a winner already found is closed at once).

The race ends at `plan.end` by itself, since its waits take a time-out anyway; the sequential
path leaves the deadline to the caller's timer (the pool's cancels the task at `plan.end`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from .._core.connect import ConnectPlan
from .._core.dns import Address
from .._core.eyeballs import Stagger

__all__ = ["open_tcp"]

Setup = Callable[[socket.socket], None]


async def open_tcp(loop: asyncio.AbstractEventLoop, plan: ConnectPlan,
                   addresses: list[Address], *, delay: float,
                   setup: Setup) -> tuple[socket.socket, Address]:
    """Connect to one of the addresses `plan` hands out (`addresses` is the list given to
    `plan.resolved`; only its length is read here, to choose between racing and not).

    Each attempt's socket is new, non-blocking, and passed to `setup` before it connects
    (an OSError from `setup` fails that attempt). Failed attempts are recorded with
    `plan.failed`; when none connects, or the plan's deadline passes while racing, raises
    `plan.error()`. Returns the connected, non-blocking socket and its address: the caller
    owns it from then on (and calls `plan.connected`).
    """
    if delay <= 0 or len(addresses) < 2:
        return await _one_by_one(loop, plan, setup)
    return await _Race(loop, plan, delay, setup).run()


def _new_socket(address: Address, setup: Setup) -> socket.socket:
    sock = socket.socket(address[0], socket.SOCK_STREAM)
    try:
        setup(sock)
        sock.setblocking(False)  # after `setup`, so nothing it does can undo it
    except BaseException:
        sock.close()
        raise
    return sock


async def _one_by_one(loop: asyncio.AbstractEventLoop, plan: ConnectPlan,
                      setup: Setup) -> tuple[socket.socket, Address]:
    """The sequential connect. Its deadline is the caller's: the pool's timer at
    `plan.end` cancels the task, and a wait of our own would cost a timer per connect."""
    while (address := plan.next_address(loop.time())) is not None:
        try:
            sock = _new_socket(address, setup)
        except OSError as exc:
            plan.failed(address, exc)
            continue
        try:
            await loop.sock_connect(sock, address[1])
        except OSError as exc:
            sock.close()
            plan.failed(address, exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock, address
    raise plan.error()


async def _connect(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                   address: Address) -> None:
    await loop.sock_connect(sock, address[1])


class _Attempt:
    """One racing connect: its socket, address, number (for Stagger.failed) and task."""

    __slots__ = ("address", "number", "sock", "task")

    def __init__(self, sock: socket.socket, address: Address, number: int,
                 task: asyncio.Task[None]) -> None:
        self.sock = sock
        self.address = address
        self.number = number
        self.task = task

    def dispose(self, _task: object = None) -> None:
        """Close the socket of an attempt that did not win (its task has ended)."""
        if not self.task.cancelled():
            self.task.exception()  # retrieved: a loser's error is no news to anyone
        self.sock.close()


class _Race:
    """Staggered attempts; the first to connect wins."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: ConnectPlan, delay: float,
                 setup: Setup) -> None:
        self.loop = loop
        self.plan = plan
        self.setup = setup
        self.stagger = Stagger(delay)
        self.racing: dict[asyncio.Task[None], _Attempt] = {}

    async def run(self) -> tuple[socket.socket, Address]:
        won: tuple[socket.socket, Address] | None = None
        try:
            won = await self._first_to_connect()
            return won
        finally:
            try:
                await self._abandon()
            except BaseException:  # cancelled while the losers wound down: no winner then
                if won is not None:
                    won[0].close()
                raise

    async def _first_to_connect(self) -> tuple[socket.socket, Address]:
        plan, loop, stagger = self.plan, self.loop, self.stagger
        more = True  # addresses left to try
        now = loop.time()
        while plan.end is None or now < plan.end:
            if more and stagger.is_due(now):
                more = self._start(now)
                now = loop.time()
                continue
            if not self.racing:
                raise plan.error()
            wake = stagger.wake(plan.end, more)
            done, _ = await asyncio.wait(
                self.racing, timeout=None if wake is None else max(0.0, wake - now),
                return_when=asyncio.FIRST_COMPLETED)
            now = loop.time()
            if done:
                won = self._settle(done)
                if won is not None:
                    return won
            elif wake is not None:
                # We slept until `wake`; the loop's clock may show a hair less (its timers
                # fire within its resolution, uvloop's is a millisecond).
                now = max(now, wake)
        plan.next_address(now)  # past the deadline: the plan records that time is up
        raise plan.error()

    def _start(self, now: float) -> bool:
        """Start an attempt on the next address; False when none is left."""
        address = self.plan.next_address(now)
        if address is None:
            return False
        number = self.stagger.started(now)
        try:
            sock = _new_socket(address, self.setup)
        except OSError as exc:
            self.plan.failed(address, exc)
            self.stagger.failed(number)
            return True
        task = self.loop.create_task(_connect(self.loop, sock, address))
        self.racing[task] = _Attempt(sock, address, number, task)
        return True

    def _settle(self, done: set[asyncio.Task[None]]) -> tuple[socket.socket, Address] | None:
        """Take the ended attempts out of the race: failures are recorded, the first
        success (by start order) wins and any other one is closed."""
        won: _Attempt | None = None
        unexpected: BaseException | None = None
        for task in sorted(done, key=lambda task: self.racing[task].number):
            attempt = self.racing.pop(task)
            exc = asyncio.CancelledError() if task.cancelled() else task.exception()
            if exc is None and won is None:
                won = attempt
                continue
            attempt.sock.close()
            if isinstance(exc, OSError):
                self.plan.failed(attempt.address, exc)
                self.stagger.failed(attempt.number)
            elif exc is not None and unexpected is None:
                unexpected = exc  # not a connect failure: cancelled by someone else, or a bug
        if unexpected is not None:
            if won is not None:
                won.sock.close()
            raise unexpected
        return None if won is None else (won.sock, won.address)

    async def _abandon(self) -> None:
        """Cancel the attempts still racing and close their sockets once their tasks end."""
        racing, self.racing = self.racing, {}
        running: list[asyncio.Task[None]] = []
        for task, attempt in racing.items():
            if task.done():  # ended unseen (we were cancelled meanwhile): the loop let go
                attempt.dispose()
                continue
            task.cancel()
            task.add_done_callback(attempt.dispose)
            running.append(task)
        if running:
            # Their close callbacks were added before asyncio.wait's own, so they have run
            # when it returns. Cancelled again meanwhile, the callbacks still close them.
            await asyncio.wait(running)

"""The sliding window of a bulk run: which request may start now. Pure bookkeeping, no I/O.

Both drivers (asyncio tasks, threads) use it the same way:

    while window.wants_input(): job = <pull one item>; if window.admit(job, now): send(job)
    on completion:  window.finish(job, now); then send every job from window.next_job(now)
    when idle:      sleep until window.next_wakeup() (a rate-limited origin becomes due)

Rules it keeps:
- at most `concurrency` requests in flight in all, at most `per_host` to one origin;
- with `rate`, requests to one origin start at least 1/rate seconds apart (no bursts);
- a job whose origin is saturated (per-host limit or rate) is *parked* in its origin's FIFO while
  jobs for other origins go ahead, so one busy origin never stalls the window;
- parked jobs are bounded by `backlog`: when it is full `wants_input()` is False and the driver
  stops pulling input until parked jobs drain. Memory is therefore O(concurrency + backlog)
  whatever the input's size, and an input dominated by one origin degrades to `per_host`
  requests in flight (the most that origin may get anyway) instead of growing without bound;
- origins with parked jobs are served round robin, each origin's jobs in input order;
- with `lookahead`, the window reads ahead: it keeps pulling input while every slot is busy,
  until `lookahead` jobs are parked, so that it can choose what starts next;
- a connection follows its origin: when a request ends and its origin has parked jobs (and may
  start one), that origin's next job takes the freed slot before the round robin goes on. Its
  connection has just gone idle in the pool, so the next request reuses it instead of closing
  it to open one elsewhere. With the look-ahead this turns a list that visits many origins in
  turn (more origins than the pool holds connections, so no idle connection would survive
  until its origin comes round again) into runs of requests per origin: each run's first
  request opens a connection, the rest reuse it. A run lasts while the origin has parked jobs,
  so an origin waits at most for the look-ahead to drain, never indefinitely.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Generic, Protocol, TypeVar

__all__ = ["Window"]

# A timer may fire a little before its due time (event loops round to their clock resolution);
# treating "due within a millisecond" as due avoids re-arming in a tight loop. The schedule is
# anchored to due times, not to start times, so this never raises the long-run rate.
_EARLY = 0.001


class _HasOrigin(Protocol):
    @property
    def origin(self) -> str: ...


J = TypeVar("J", bound=_HasOrigin)


class _Host(Generic[J]):
    __slots__ = ("active", "key", "next_at", "queue", "scheduled")

    def __init__(self, key: str) -> None:
        self.key = key
        self.active = 0
        self.queue: deque[J] = deque()  # parked jobs, input order
        self.next_at = 0.0  # earliest start of its next request (rate limit)
        self.scheduled = False  # in `_ready` or `_timers`


class Window(Generic[J]):
    """See the module docstring. `rate` is requests per second per origin, or None."""

    def __init__(self, concurrency: int, per_host: int, rate: float | None,
                 backlog: int, lookahead: int = 0) -> None:
        self.concurrency = concurrency
        self.per_host = per_host
        self.interval = 1.0 / rate if rate else 0.0
        self.backlog = backlog
        self.lookahead = min(lookahead, backlog)
        self.in_flight = 0
        self.parked = 0
        self._hosts: dict[str, _Host[J]] = {}
        self._ready: deque[_Host[J]] = deque()  # have parked jobs and may start one now
        # Origins whose request just ended while they had parked jobs: served first, newest
        # first (their connection is the one most surely still idle). Bounded: a slot frees
        # one entry, and an entry older than `concurrency` endings has lost its connection's
        # claim anyway. Entries are checked when taken, as in `_ready`.
        self._warm: deque[_Host[J]] = deque(maxlen=concurrency)
        # With the look-ahead, origins taken from `_ready` that already have requests in flight
        # wait here while `_ready` has an origin with none: a second request at once to a busy
        # origin needs a second connection, a request to an idle one may reuse its last.
        self._busy: deque[_Host[J]] = deque()
        self._timers: list[tuple[float, int, _Host[J]]] = []  # waiting for their rate slot
        self._seq = itertools.count()
        self._prune_at = 4 * (concurrency + backlog)  # origins remembered before a clean-up

    # -- questions ---------------------------------------------------------------------------
    def wants_input(self) -> bool:
        """Pulling another input item is useful: a slot is free and the backlog is not full,
        or every slot is busy and the look-ahead is not full."""
        if self.in_flight < self.concurrency:
            return self.parked < self.backlog
        return self.parked < self.lookahead

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.parked == 0

    def next_wakeup(self) -> float | None:
        """When a rate-limited origin with parked jobs becomes due, if any is waiting for it."""
        while self._timers and not self._timers[0][2].queue:
            heapq.heappop(self._timers)[2].scheduled = False
        return self._timers[0][0] if self._timers else None

    # -- inputs ------------------------------------------------------------------------------
    def admit(self, job: J, now: float) -> bool:
        """A newly pulled job: True if it may start now (it is then counted as in flight),
        False if it was parked. Call only while `wants_input()` holds."""
        host = self._hosts.get(job.origin)
        if host is None:
            host = self._hosts[job.origin] = _Host(job.origin)
        if (host.queue or host.active >= self.per_host or host.next_at > now + _EARLY
                or self.in_flight >= self.concurrency):  # read ahead: every slot is busy
            host.queue.append(job)
            self.parked += 1
            self._schedule(host, now)
            return False
        self._start(host, now)
        return True

    def next_job(self, now: float) -> J | None:
        """A parked job that may start now (counted as in flight), or None."""
        if self.in_flight >= self.concurrency:
            return None
        timers = self._timers
        while timers and timers[0][0] <= now + _EARLY:
            host = heapq.heappop(timers)[2]
            host.scheduled = False
            self._schedule(host, now)
        warm = self._warm
        while warm:
            host = warm.pop()
            if host.queue and host.active < self.per_host and host.next_at <= now + _EARLY:
                job = host.queue.popleft()
                self.parked -= 1
                self._start(host, now)
                self._schedule(host, now)  # if it was in `_ready` already, it stays there
                return job
        ready, busy = self._ready, self._busy
        while ready or busy:
            if ready:
                host = ready.popleft()
                if host.active and self.lookahead and host.queue:
                    busy.append(host)  # still scheduled: taken below if nothing else is
                    continue
            else:
                host = busy.popleft()
            host.scheduled = False
            if not host.queue or host.active >= self.per_host:
                continue  # saturated: finish() schedules it again
            if host.next_at > now + _EARLY:
                self._schedule(host, now)
                continue
            job = host.queue.popleft()
            self.parked -= 1
            self._start(host, now)
            self._schedule(host, now)  # to the back of the round robin
            return job
        return None

    def finish(self, job: J, now: float) -> None:
        """`job`'s request ended, however it ended."""
        host = self._hosts[job.origin]
        host.active -= 1
        self.in_flight -= 1
        if host.queue:
            self._warm.append(host)
            self._schedule(host, now)
        elif not host.active and host.next_at <= now and not host.scheduled:
            del self._hosts[host.key]  # nothing remembered about it matters any more
        elif len(self._hosts) > self._prune_at:
            self._prune(now)

    # -- internals ---------------------------------------------------------------------------
    def _start(self, host: _Host[J], now: float) -> None:
        host.active += 1
        self.in_flight += 1
        if self.interval:
            host.next_at = max(host.next_at, now) + self.interval

    def _schedule(self, host: _Host[J], now: float) -> None:
        if host.scheduled or not host.queue or host.active >= self.per_host:
            return
        host.scheduled = True
        if host.next_at > now + _EARLY:
            heapq.heappush(self._timers, (host.next_at, next(self._seq), host))
        else:
            self._ready.append(host)

    def _prune(self, now: float) -> None:
        """Forget origins whose rate slot has passed and that have nothing to do."""
        stale = [key for key, host in self._hosts.items()
                 if not host.active and not host.queue and not host.scheduled
                 and host.next_at <= now]
        for key in stale:
            del self._hosts[key]
        # Amortised: the next clean-up waits until the table has doubled again.
        self._prune_at = max(4 * (self.concurrency + self.backlog), 2 * len(self._hosts))

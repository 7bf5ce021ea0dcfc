"""The window's bookkeeping, without I/O: bounds, parking, round robin, rate, backlog."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from poolhttp.bulk._window import Window


@dataclass(frozen=True)
class J:
    origin: str
    n: int = 0


def drain(window: Window[J], now: float) -> list[J]:
    started = []
    while (job := window.next_job(now)) is not None:
        started.append(job)
    return started


def test_concurrency_and_per_host_bounds_hold_under_random_load() -> None:
    rng = random.Random(7)
    window: Window[J] = Window(concurrency=10, per_host=3, rate=None, backlog=50)
    running: list[J] = []
    pulled = 0
    for _ in range(5000):
        if window.wants_input() and pulled < 3000:
            job = J(f"h{rng.randrange(6)}", pulled)
            pulled += 1
            if window.admit(job, 0.0):
                running.append(job)
        elif running:
            done = running.pop(rng.randrange(len(running)))
            window.finish(done, 0.0)
            running += drain(window, 0.0)
        assert len(running) == window.in_flight <= 10
        for host in {j.origin for j in running}:
            assert sum(j.origin == host for j in running) <= 3
        assert window.parked <= 50


def test_a_saturated_origin_does_not_stall_the_others() -> None:
    window: Window[J] = Window(concurrency=8, per_host=2, rate=None, backlog=100)
    started = [j for j in (J("busy", i) for i in range(10)) if window.admit(j, 0.0)]
    assert len(started) == 2
    assert window.parked == 8
    assert window.wants_input()  # slots are free: keep pulling, other origins may use them
    others = [J("other", i) for i in range(3)]
    assert all(window.admit(j, 0.0) for j in others[:2])
    assert window.in_flight == 4


def test_backlog_bounds_what_is_pulled_when_one_origin_dominates() -> None:
    window: Window[J] = Window(concurrency=64, per_host=4, rate=None, backlog=20)
    pulled = 0
    while window.wants_input():
        window.admit(J("one", pulled), 0.0)
        pulled += 1
    assert pulled == 24  # 4 in flight + 20 parked, then the driver stops pulling
    assert window.in_flight == 4


def test_parked_jobs_start_in_input_order_per_origin_and_round_robin_across() -> None:
    window: Window[J] = Window(concurrency=2, per_host=1, rate=None, backlog=100)
    jobs = [J("a", 0), J("a", 1), J("a", 2), J("b", 3), J("b", 4)]
    started = [j for j in jobs if window.admit(j, 0.0)]
    assert started == [J("a", 0), J("b", 3)]
    window.finish(J("a", 0), 0.0)
    assert drain(window, 0.0) == [J("a", 1)]
    window.finish(J("b", 3), 0.0)
    assert drain(window, 0.0) == [J("b", 4)]
    window.finish(J("a", 1), 0.0)
    assert drain(window, 0.0) == [J("a", 2)]


def test_rate_spaces_starts_per_origin() -> None:
    window: Window[J] = Window(concurrency=10, per_host=10, rate=10.0, backlog=100)
    assert window.admit(J("a", 0), 0.0)
    assert not window.admit(J("a", 1), 0.0)  # 0.1 s apart
    assert window.admit(J("b", 2), 0.0)  # another origin is not held back
    assert window.next_wakeup() == 0.1
    assert window.next_job(0.05) is None
    assert window.next_job(0.1) == J("a", 1)
    starts = []
    for n in range(3, 8):
        window.admit(J("a", n), 0.1)
    now = 0.1
    while window.parked:
        wake = window.next_wakeup()
        assert wake is not None
        now = wake
        starts += [now for _ in drain(window, now)]
    assert len(starts) == 5
    assert all(abs(b - a - 0.1) < 1e-9 for a, b in itertools.pairwise(starts))


def test_origins_are_forgotten_when_idle() -> None:
    window: Window[J] = Window(concurrency=4, per_host=2, rate=None, backlog=10)
    for n in range(1000):
        job = J(f"h{n}", n)
        assert window.admit(job, 0.0)
        window.finish(job, 0.0)
    assert window.idle
    assert not window._hosts


# -- read-ahead and "a connection follows its origin" -----------------------------------------

def test_without_lookahead_input_stops_when_every_slot_is_busy() -> None:
    window: Window[J] = Window(concurrency=2, per_host=2, rate=None, backlog=100)
    assert window.admit(J("a", 0), 0.0)
    assert window.admit(J("b", 1), 0.0)
    assert not window.wants_input()


def test_lookahead_reads_ahead_while_every_slot_is_busy_and_stays_bounded() -> None:
    window: Window[J] = Window(concurrency=2, per_host=2, rate=None, backlog=100, lookahead=30)
    pulled = 0
    while window.wants_input():
        window.admit(J(f"h{pulled % 7}", pulled), 0.0)
        pulled += 1
    assert window.in_flight == 2
    assert window.parked == 30  # read ahead up to the look-ahead, not the whole backlog
    assert pulled == 32
    # The look-ahead can never exceed the backlog that bounds memory.
    assert Window[J](concurrency=2, per_host=2, rate=None, backlog=10, lookahead=50).lookahead == 10


def test_a_freed_slot_goes_to_the_origin_whose_request_ended() -> None:
    window: Window[J] = Window(concurrency=2, per_host=1, rate=None, backlog=100, lookahead=100)
    for n, origin in enumerate("abcabcabc"):
        window.admit(J(origin, n), 0.0)
    assert window.in_flight == 2  # a0 and b1 run; c2 and the rest are parked
    window.finish(J("b", 1), 0.0)
    # Round robin alone would start c (first in line); b's connection has just gone idle.
    assert drain(window, 0.0) == [J("b", 4)]
    window.finish(J("a", 0), 0.0)
    assert drain(window, 0.0) == [J("a", 3)]


def test_with_lookahead_an_origin_with_nothing_in_flight_goes_first() -> None:
    window: Window[J] = Window(concurrency=3, per_host=2, rate=None, backlog=100, lookahead=100)
    assert window.admit(J("a", 0), 0.0)
    assert window.admit(J("b", 1), 0.0)
    assert window.admit(J("c", 2), 0.0)
    for n, origin in enumerate("aaxy", start=3):
        assert not window.admit(J(origin, n), 0.0)  # every slot is busy: read ahead
    window.finish(J("c", 2), 0.0)  # c has nothing parked: the slot is anyone's
    # "a" is first in line but busy (a second connection to it); x has nothing in flight.
    assert drain(window, 0.0) == [J("x", 5)]
    window.finish(J("b", 1), 0.0)
    assert drain(window, 0.0) == [J("y", 6)]
    window.finish(J("x", 5), 0.0)
    assert drain(window, 0.0) == [J("a", 3)]  # only busy origins are left: one is served


def simulated_reuse(lookahead: int, *, origins: int = 500, jobs: int = 20_000) -> float:
    """Share of requests that find an idle connection to their origin, in a pool of
    `concurrency` connections that closes the least recently used idle one to open another,
    for a list visiting `origins` in turn and requests that end in random order."""
    rng = random.Random(11)
    concurrency = 16
    window: Window[J] = Window(concurrency=concurrency, per_host=4, rate=None, backlog=10_000,
                               lookahead=lookahead)
    idle: dict[str, int] = {}  # origin -> idle connections, in least-recently-used order
    open_connections = reused = 0
    running: list[J] = []

    def start(job: J) -> None:
        nonlocal open_connections, reused
        if idle.get(job.origin):
            idle[job.origin] -= 1
            reused += 1
        else:
            if open_connections == concurrency:  # full: close an idle one elsewhere
                victim = next(o for o, n in idle.items() if n)
                idle[victim] -= 1
                open_connections -= 1
            open_connections += 1
        running.append(job)

    pulled = 0
    while pulled < jobs or running:
        while pulled < jobs and window.wants_input():
            job = J(f"h{pulled % origins}", pulled)
            pulled += 1
            if window.admit(job, 0.0):
                start(job)
        done = running.pop(rng.randrange(len(running)))
        idle[done.origin] = idle.pop(done.origin, 0) + 1  # now the most recently used
        window.finish(done, 0.0)
        for job in drain(window, 0.0):
            start(job)
    assert window.idle
    return reused / jobs


def test_lookahead_turns_a_list_of_many_origins_into_reused_connections() -> None:
    # 500 origins in turn through 16 connections: the next request to an origin comes 500
    # requests later, long after its idle connection was closed for another origin's.
    assert simulated_reuse(lookahead=0) < 0.2
    assert simulated_reuse(lookahead=10_000) > 0.85

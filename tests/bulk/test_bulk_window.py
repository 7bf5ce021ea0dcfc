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

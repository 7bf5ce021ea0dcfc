"""The load loops that every (non-raw) client row shares, so that all of them do the same work.

A job asks for `requests` requests at a given concurrency. After a warm-up in which every task or
thread sends exactly one request (opening the connections and paying any lazy set-up; on the
HTTP/2 workloads one request goes alone first, see drive_async), the timed phase hands out
request numbers from one shared counter; request i goes to urls[i % len(urls)], which is the
round-robin over origins. The timed phase stops at the job's request count or when it has run
for `time_limit` seconds, whichever comes first; the warm-up is bounded by the clients' own
time-outs (every phase of every request has one). Smoke runs skip the warm-up.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

Job = dict[str, Any]
# A request function: takes a URL, returns (status code, body bytes read).
AsyncCall = Callable[[str], Awaitable[tuple[int, int]]]
SyncCall = Callable[[str], tuple[int, int]]


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    nbytes: int = 0
    error_sample: str | None = None

    def good(self, status: int, nbytes: int, expect: int) -> None:
        if status == 200 and nbytes == expect:
            self.ok += 1
            self.nbytes += nbytes
        else:
            self.bad(f"status {status}, {nbytes} body bytes (expected 200, {expect})")

    def bad(self, what: str | BaseException) -> None:
        self.errors += 1
        if self.error_sample is None:
            self.error_sample = what if isinstance(what, str) else f"{type(what).__name__}: {what}"

    def add(self, other: Tally) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.nbytes += other.nbytes
        if self.error_sample is None:
            self.error_sample = other.error_sample


# The longest the threads wait for each other after the warm-up: a request's time-outs, twice.
WARMUP_LIMIT = 25.0
# How long a thread may still run after the deadline: one request's time-outs, plus slack.
JOIN_GRACE = 15.0


def join_threads(threads: list[threading.Thread], deadline: float, tally: Tally) -> int:
    """Join threads that stop by themselves at `deadline`, giving up on any stuck past the
    grace period (daemon threads: the worker can still exit). Each stuck thread counts as an
    error; returns how many there are."""
    give_up = deadline + JOIN_GRACE  # one grace period for all, not one per thread
    for t in threads:
        t.join(timeout=max(give_up - time.perf_counter(), 0.0))
    stuck = sum(t.is_alive() for t in threads)
    for _ in range(stuck):
        tally.bad(f"{stuck} thread(s) still inside a request {JOIN_GRACE:.0f} s after the "
                  "time limit")
    return stuck


def peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def result(measured: Tally, warmup: Tally, seconds: float, timed_out: bool,
           **info: Any) -> dict[str, Any]:
    """The worker's answer for a load job (the orchestrator turns it into a figure)."""
    return {
        "ok": measured.ok,
        "errors": measured.errors + warmup.errors,
        "error_sample": measured.error_sample or warmup.error_sample,
        "bytes": measured.nbytes,
        "seconds": seconds,
        "timed_out": timed_out,
        "peak_rss_kib": peak_rss_kib(),
        "info": info,
        "warmup": asdict(warmup),
    }


async def drive_async(job: Job, call: AsyncCall) -> tuple[Tally, Tally, float, bool]:
    """Run the job with `concurrency` tasks; returns (measured, warm-up, seconds, timed out)."""
    urls: list[str] = job["urls"]
    n_urls = len(urls)
    expect: int = job["expect_len"]
    total: int = job["requests"]
    tasks: int = job["concurrency"]
    warm = Tally()
    measured = Tally()
    next_index = 0
    perf_counter = time.perf_counter

    async def warm_one(i: int) -> None:
        try:
            status, nbytes = await call(urls[i % n_urls])
        except Exception as exc:
            warm.bad(exc)
        else:
            warm.good(status, nbytes, expect)

    async def loop() -> None:
        nonlocal next_index
        tally = measured
        while next_index < total and perf_counter() < deadline:
            i = next_index
            next_index = i + 1
            try:
                status, nbytes = await call(urls[i % n_urls])
            except Exception as exc:
                tally.bad(exc)
            else:
                tally.good(status, nbytes, expect)

    if job["warmup"]:
        if job.get("prime"):
            # HTTP/2: one request alone first, so that a client that multiplexes has its
            # connection open, and knows it speaks h2, before the burst of the other tasks.
            await warm_one(0)
        await asyncio.gather(*(warm_one(i) for i in range(tasks)))
    started = perf_counter()
    deadline = started + job["time_limit"]
    await asyncio.gather(*(loop() for _ in range(tasks)))
    seconds = perf_counter() - started
    return measured, warm, seconds, next_index < total


def drive_threads(job: Job, call: SyncCall) -> tuple[Tally, Tally, float, bool, int]:
    """Run the job's requests with `concurrency` threads sharing `call` (and so one client);
    returns (measured, warm-up, seconds, timed out, threads stuck in a request)."""
    urls: list[str] = job["urls"]
    n_urls = len(urls)
    expect: int = job["expect_len"]
    total: int = job["requests"]
    n_threads: int = job["concurrency"]
    limit: float = job["time_limit"]
    # next() on itertools.count is atomic under the GIL: a lock-free shared ticket counter.
    tickets = itertools.count()
    # Everyone (the threads and this one) meets here after the warm-up, so the clock starts
    # when the connections are open.
    gate = threading.Barrier(n_threads + 1)
    warm = [Tally() for _ in range(n_threads)]
    measured = [Tally() for _ in range(n_threads)]

    def body(k: int) -> None:
        tally = warm[k]
        if job["warmup"]:
            try:
                status, nbytes = call(urls[k % n_urls])
            except Exception as exc:
                tally.bad(exc)
            else:
                tally.good(status, nbytes, expect)
        try:
            gate.wait(timeout=WARMUP_LIMIT)
        except threading.BrokenBarrierError:
            return
        tally = measured[k]
        perf_counter = time.perf_counter
        deadline = perf_counter() + limit
        while perf_counter() < deadline:
            i = next(tickets)
            if i >= total:
                break
            try:
                status, nbytes = call(urls[i % n_urls])
            except Exception as exc:
                tally.bad(exc)
            else:
                tally.good(status, nbytes, expect)

    threads = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    try:
        gate.wait(timeout=WARMUP_LIMIT)
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    total_measured, total_warm = Tally(), Tally()
    stuck = join_threads(threads, started + limit, total_measured)
    seconds = time.perf_counter() - started
    for tally in measured:
        total_measured.add(tally)
    for tally in warm:
        total_warm.add(tally)
    done = total_measured.ok + total_measured.errors
    return total_measured, total_warm, seconds, done < total, stuck

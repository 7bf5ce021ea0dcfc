"""`fetch_distributed`: the bulk fetcher spread over a Dask cluster (the `dask` extra).

Origins are partitioned by a stable hash (`partition_of`), and a partition has at most one
chunk in flight at a time, so an origin is fetched by one worker at a time and `per_host`
holds across the cluster as on one machine. With `rate`, each chunk returns its origins' next
due times (Unix seconds) and the driver hands them to the partition's next chunk, so a chunk
boundary causes no burst. Each worker process keeps one `AsyncClient` per setting on an event
loop in a thread, reused by every chunk it runs: its pool stays warm.

The driver reads the input once, lazily: at most `chunk_size` items wait per partition, and
when a partition's buffer is full while it is busy, reading pauses until a chunk returns. So
the driver holds O(partitions x chunk_size) items and the scheduler O(max_tasks) chunks.

A chunk lost with its worker is run again by the scheduler (and resubmitted by the driver if
the scheduler gives up on it); results arrive once per chunk, keyed as given, so a consumer
that stores by key (the CLI stores by line number) never stores one twice.

`distributed` is imported only when this is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolhttp import Headers, Limits, PoolStats, Timeout

from ._async import fetch_many
from ._options import DEFAULT_CONCURRENCY, DEFAULT_PER_HOST
from ._types import BulkItem, BulkRequest, BulkResult, Job, prepare

__all__ = ["DistributedFetch", "WorkerFigures", "fetch_distributed", "partition_of",
           "require_distributed"]

DEFAULT_CHUNK = 500
INSTALL_HINT = "pip install 'poolhttp[dask]'"

#: What travels to a worker per item: key, URL, method, raw headers, body.
WireItem = tuple[Any, str, str, "list[tuple[bytes, bytes]] | None", "bytes | None"]
#: What comes back per result.
WireResult = tuple[Any, str, str, "int | None", "list[tuple[bytes, bytes]] | None",
                   "bytes | None", int, "str | None", float, int, "str | None", "str | None",
                   "str | None", "str | None"]


def require_distributed() -> Any:
    """The `distributed` module, or an ImportError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"fetch_distributed needs Dask's distributed scheduler: "
                          f"{INSTALL_HINT}") from exc
    return distributed


def partition_of(origin: str, partitions: int) -> int:
    """A stable partition for an origin (the same in every process and every run)."""
    return zlib.crc32(origin.encode("utf-8")) % partitions


@dataclass
class WorkerFigures:
    """What one worker process did, for the progress display."""

    results: int = 0
    chunks: int = 0
    busy: float = 0.0  # seconds spent running chunks
    created: int = 0  # connections its pools opened for these chunks
    reused: int = 0  # requests they sent on a connection that had carried one before


@dataclass
class _Spec:
    concurrency: int
    per_host: int
    rate: float | None
    keep_bodies: bool
    timeout: float | None
    client_options: dict[str, Any] = field(default_factory=dict)

    def client_key(self) -> tuple[Any, ...]:
        return (self.concurrency, self.per_host, self.timeout,
                tuple(sorted((k, repr(v)) for k, v in self.client_options.items())))


# -- the worker's side ------------------------------------------------------------------------
class _WorkerState:
    """One event loop in a thread per worker process, and its clients (warm pools)."""

    lock = threading.Lock()
    loop: asyncio.AbstractEventLoop | None = None
    clients: dict[tuple[Any, ...], Any] = {}
    # Per client: (created, reused) when a chunk last reported them. Chunks running at once
    # share a client, so each reports what changed since the last report, on the loop's thread:
    # the reports add up to the client's totals, none counted twice.
    reported: dict[tuple[Any, ...], tuple[int, int]] = {}

    @classmethod
    def get_loop(cls) -> asyncio.AbstractEventLoop:
        with cls.lock:
            if cls.loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="poolhttp-dask-loop",
                                          daemon=True)
                thread.start()
                cls.loop = loop
            return cls.loop


async def _client_for(spec: _Spec, slots: int) -> Any:
    from poolhttp import AsyncClient

    key = spec.client_key()
    client = _WorkerState.clients.get(key)
    if client is None:
        options = dict(spec.client_options)
        options.setdefault("limits", Limits(max_connections=spec.concurrency * slots,
                                            max_connections_per_host=spec.per_host))
        if spec.timeout is not None:
            options.setdefault("timeout", Timeout(spec.timeout))
        client = AsyncClient(**options)
        _WorkerState.clients[key] = client
    return client


ChunkOutcome = tuple[list[WireResult], dict[str, float], str, float, tuple[int, int]]


def run_chunk(spec: _Spec, items: list[WireItem], due: dict[str, float],
              slots: int) -> ChunkOutcome:
    """A task: fetch one chunk on this process's loop; (results, next due times, worker, busy
    seconds, (connections opened, requests on reused connections) since the last report)."""
    started = time.monotonic()
    loop = _WorkerState.get_loop()
    future = asyncio.run_coroutine_threadsafe(_chunk(spec, items, due, slots), loop)
    results, next_due, pool = future.result()
    return results, next_due, _worker_address(), time.monotonic() - started, pool


def _pool_report(spec: _Spec, client: Any) -> tuple[int, int]:
    """What the client's pool did since the last report (on the loop's thread)."""
    stats = client.stats()
    key = spec.client_key()
    created, reused = _WorkerState.reported.get(key, (0, 0))
    _WorkerState.reported[key] = (stats.created, stats.reused)
    return stats.created - created, stats.reused - reused


def _worker_address() -> str:
    """This worker's address (the scheduler's name for it), else host:pid."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        import socket

        return f"{socket.gethostname()}:{os.getpid()}"


async def _chunk(spec: _Spec, items: list[WireItem], due: dict[str, float],
                 slots: int) -> tuple[list[WireResult], dict[str, float], tuple[int, int]]:
    client = await _client_for(spec, slots)
    out, next_due = await _fetch_chunk(client, spec, items, due)
    return out, next_due, _pool_report(spec, client)


async def _fetch_chunk(client: Any, spec: _Spec, items: list[WireItem],
                       due: dict[str, float]) -> tuple[list[WireResult], dict[str, float]]:
    out: list[WireResult] = []
    if spec.rate is None:
        async for result in fetch_many(client, [_request(i) for i in items],
                                       concurrency=spec.concurrency, per_host=spec.per_host,
                                       keep_bodies=spec.keep_bodies):
            out.append(_wire(result))
        return out, {}
    # With a rate: one sub-run per origin, each starting at its origin's due time, so the
    # schedule carries over from the previous chunk. Sub-runs share the chunk's concurrency.
    groups: dict[str, list[WireItem]] = {}
    for item in items:
        groups.setdefault(_origin_of(item[1]), []).append(item)
    gate = asyncio.Semaphore(max(1, spec.concurrency // spec.per_host))
    next_due: dict[str, float] = {}
    rate = spec.rate

    async def one(origin: str, group: list[WireItem]) -> None:
        async with gate:
            wait = due.get(origin, 0.0) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            first = time.time()
            async for result in fetch_many(client, [_request(i) for i in group],
                                           concurrency=spec.per_host, per_host=spec.per_host,
                                           rate=rate, keep_bodies=spec.keep_bodies):
                out.append(_wire(result))
            # The window spaces starts 1/rate apart from `first`; the last started before
            # now, so both bounds are safe and the larger is the next chunk's first slot.
            next_due[origin] = max(first + len(group) / rate, time.time() + 1.0 / rate)

    await asyncio.gather(*(one(o, g) for o, g in groups.items()))
    return out, next_due


def _origin_of(url: str) -> str:
    from poolhttp import URL

    return URL(url).origin.key


def _request(item: WireItem) -> BulkRequest:
    key, url, method, headers, body = item
    return BulkRequest(url, method=method, headers=headers, body=body, key=key)


def _wire(r: BulkResult) -> WireResult:
    headers = None if r.headers is None else list(r.headers.raw)
    return (r.key, r.url, r.method, r.status, headers, r.body, r.size, r.sha256, r.elapsed,
            r.attempts, r.error_type, r.error, r.origin, r.final_url)


def _unwire(w: WireResult) -> BulkResult:
    (key, url, method, status, headers, body, size, sha256, elapsed, attempts, error_type,
     error, origin, final_url) = w
    return BulkResult(key=key, url=url, method=method, status=status,
                      headers=None if headers is None else Headers(headers), body=body,
                      size=size, sha256=sha256, elapsed=elapsed, attempts=attempts,
                      error_type=error_type, error=error, origin=origin, final_url=final_url)


# -- the driver's side ------------------------------------------------------------------------
def fetch_distributed(urls_or_path: Iterable[BulkItem] | str | os.PathLike[str], *,
                      client: Any = None, workers: int = 2, threads_per_worker: int = 2,
                      partitions: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                      concurrency: int | None = None, per_host: int | None = None,
                      rate: float | None = None, keep_bodies: bool = True,
                      timeout: float | None = None, max_tasks: int | None = None,
                      client_options: dict[str, Any] | None = None) -> DistributedFetch:
    """Fetch every item on a Dask cluster; iterate for `BulkResult`s (as `fetch_many`'s).

    `urls_or_path` is an iterable of items (URL strings, `poolhttp.URL`s, `BulkRequest`s)
    or the path of a file of URLs (one per line; blank lines and `#` comments skipped).
    `client` is a `dask.distributed.Client`; without one a local cluster of `workers`
    processes is started and closed at the end. `concurrency` is per chunk task (a worker
    runs `threads_per_worker` tasks at once); `per_host` and `rate` hold per origin across the
    whole cluster. `partitions` (default 8 per worker thread) is how many origin groups there
    are; `chunk_size` items go to a worker per task. `client_options` are passed to each
    worker's `poolhttp.AsyncClient` (they must pickle).

    The result is an iterator (and a context manager: leaving it early cancels the chunks in
    flight); `.workers` has the per-worker figures so far (results, chunks, busy seconds,
    connections opened and reused), `.pool_stats()` their pools' totals.
    """
    require_distributed()
    concurrency = DEFAULT_CONCURRENCY if concurrency is None else concurrency
    per_host = min(DEFAULT_PER_HOST if per_host is None else per_host, concurrency)
    for name, value in (("concurrency", concurrency), ("per_host", per_host),
                        ("workers", workers), ("chunk_size", chunk_size),
                        ("threads_per_worker", threads_per_worker)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, not {rate!r}")
    spec = _Spec(concurrency, per_host, None if rate is None else float(rate), keep_bodies,
                 timeout, dict(client_options or {}))
    if isinstance(urls_or_path, (str, os.PathLike)):
        items: Iterable[BulkItem] = _lines_of(Path(urls_or_path))
    else:
        items = urls_or_path
    return DistributedFetch(items, spec, client, workers=workers,
                            threads=threads_per_worker, partitions=partitions,
                            chunk_size=chunk_size, max_tasks=max_tasks)


def _lines_of(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if line and not line.startswith("#"):
                yield line


class DistributedFetch:
    """The iterator `fetch_distributed` returns."""

    #: A chunk the scheduler gave up on (its workers kept dying) is resubmitted this often.
    RESUBMITS = 5

    def __init__(self, items: Iterable[BulkItem], spec: _Spec, client: Any, *, workers: int,
                 threads: int, partitions: int | None, chunk_size: int,
                 max_tasks: int | None) -> None:
        self._items = items
        self._spec = spec
        self._given = client
        self._n_workers = workers
        self._threads = threads
        self._partitions = partitions
        self._chunk = chunk_size
        self._max_tasks = max_tasks
        self.workers: dict[str, WorkerFigures] = {}
        self.resubmitted = 0
        self.chunks = 0
        self._gen: Iterator[BulkResult] | None = None
        self._cleanup = contextlib.ExitStack()

    def __iter__(self) -> Iterator[BulkResult]:
        return self

    def pool_stats(self) -> PoolStats:
        """The workers' pools so far, added up: `created` (connections opened) and `reused`
        (requests sent on a connection that had carried one before). Per-origin figures and
        the open/idle counts stay on the workers: `per_host` is empty, the others are 0."""
        figures = self.workers.values()
        return PoolStats(created=sum(f.created for f in figures),
                         reused=sum(f.reused for f in figures))

    def __next__(self) -> BulkResult:
        if self._gen is None:
            self._gen = self._run()
        return next(self._gen)

    def __enter__(self) -> DistributedFetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._gen is not None:
            close = getattr(self._gen, "close", None)
            if close is not None:
                close()
        self._cleanup.close()

    def _dask_client(self) -> tuple[Any, int]:
        distributed = require_distributed()
        if self._given is not None:
            client = self._given
        else:
            cluster = self._cleanup.enter_context(distributed.LocalCluster(
                n_workers=self._n_workers, threads_per_worker=self._threads, processes=True,
                dashboard_address=None, host="127.0.0.1"))
            client = self._cleanup.enter_context(distributed.Client(cluster))
        threads = client.nthreads()
        return client, max(1, sum(threads.values()) if threads else self._threads)

    def _run(self) -> Iterator[BulkResult]:
        distributed = require_distributed()
        client, total_threads = self._dask_client()
        slots = self._threads if self._given is None else max(
            client.nthreads().values() or [self._threads])
        partitions = self._partitions or 8 * total_threads
        max_tasks = self._max_tasks or 2 * total_threads
        buffers: list[list[WireItem]] = [[] for _ in range(partitions)]
        schedules: list[dict[str, float]] = [{} for _ in range(partitions)]
        busy: dict[Any, tuple[int, list[WireItem], int]] = {}  # future -> (p, chunk, tries)
        busy_parts: set[int] = set()
        ready: deque[int] = deque()  # partitions with a full buffer, not busy
        done = distributed.as_completed()
        input_done = False
        spec = self._spec

        def submit(p: int, chunk: list[WireItem], tries: int = 0) -> None:
            now = time.time()
            due = {o: t for o, t in schedules[p].items() if t > now}  # the past binds nothing
            schedules[p] = due
            # No worker affinity: pinning a partition to the worker of its last chunk (warm
            # connections) was slower in bench/distributed.py (tasks queued behind a busy
            # worker while another idled); the scheduler places each chunk.
            fut = client.submit(run_chunk, spec, chunk, due, slots, pure=False, retries=2)
            busy[fut] = (p, chunk, tries)
            busy_parts.add(p)
            done.add(fut)
            self.chunks += 1

        def take(p: int) -> None:
            chunk, buffers[p] = buffers[p][:self._chunk], buffers[p][self._chunk:]
            submit(p, chunk)

        def collect() -> Iterator[BulkResult]:
            fut = next(done)
            p, chunk, tries = busy.pop(fut)
            try:
                results, due, worker, seconds, (created, reused) = fut.result()
            except Exception:
                if tries >= self.RESUBMITS:
                    raise
                self.resubmitted += 1
                busy_parts.discard(p)
                submit(p, chunk, tries + 1)
                return
            finally:
                fut.release()
            busy_parts.discard(p)
            schedules[p].update(due)
            figures = self.workers.setdefault(worker, WorkerFigures())
            figures.results += len(results)
            figures.chunks += 1
            figures.busy += seconds
            figures.created += created
            figures.reused += reused
            if buffers[p] and (len(buffers[p]) >= self._chunk or input_done):
                take(p)
            for w in results:
                yield _unwire(w)

        def refill() -> None:
            while ready and len(busy) < max_tasks:
                p = ready.popleft()
                if p not in busy_parts and buffers[p]:
                    take(p)

        try:
            for index, item in enumerate(self._items):
                job = prepare(item, index, None)
                if isinstance(job, BulkResult):
                    yield job
                    continue
                p = partition_of(job.origin, partitions)
                buffers[p].append(_to_wire(job))
                if len(buffers[p]) == self._chunk:  # once per chunk: `ready` stays small
                    if p not in busy_parts and len(busy) < max_tasks:
                        take(p)
                    else:
                        ready.append(p)
                # Bounded memory: wait while a full buffer cannot be sent, or too many tasks.
                while busy and (len(buffers[p]) >= 2 * self._chunk or len(busy) >= max_tasks):
                    yield from collect()
                    refill()
            input_done = True
            for p in range(partitions):
                if buffers[p] and p not in busy_parts:
                    ready.append(p)
            while busy or any(buffers):
                refill()
                if not busy:
                    for p in range(partitions):
                        if buffers[p] and p not in busy_parts:
                            take(p)
                    continue
                yield from collect()
                for p in range(partitions):
                    if buffers[p] and p not in busy_parts and p not in ready:
                        ready.append(p)
        finally:
            for fut in list(busy):
                with contextlib.suppress(Exception):
                    fut.cancel()
            busy.clear()


def _to_wire(job: Job) -> WireItem:
    return (job.key, str(job.url), job.method, job.headers, job.body)

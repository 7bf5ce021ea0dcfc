"""`fetch_many_sync`: the bulk fetcher for a (thread-safe) `poolhttp.Client`.

The calling thread owns the window: it pulls the input, decides what starts, and hands jobs to
worker threads through a queue; workers send them and hand results back through another. So
the window needs no lock, and the input iterable is only ever touched by the caller's thread.
Workers are started on demand, at most `concurrency` of them, and all are joined before the
iterator finishes or is closed.
"""

from __future__ import annotations

import hashlib
import inspect
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, Iterable, Iterator
from typing import Any

from poolhttp import Timeout

from ._options import Options, attempt_counter, attempts, resolve
from ._types import BulkItem, BulkResult, Job, failed, prepare, succeeded
from ._window import Window

__all__ = ["SyncResults", "fetch_many_sync"]

_Done = tuple[Job, BulkResult]
_Work = Job | None  # None tells a worker to exit


def fetch_many_sync(client: Any, requests: Iterable[BulkItem], *,
                    concurrency: int | None = None, per_host: int | None = None,
                    rate: float | None = None, keep_bodies: bool = True,
                    backlog: int | None = None,
                    timeout: Timeout | float | None = None) -> SyncResults:
    """`fetch_many` for a `poolhttp.Client`, with up to `concurrency` worker threads.

    Same arguments, defaults and results as `fetch_many` (see there); `requests` must be a
    plain iterable. Use it as a context manager or call `.close()` on it to stop early: that
    drops the jobs not yet started and waits for the requests in flight to end (each is bounded
    by the client's time-outs).

    >>> with poolhttp.Client() as client:                               # doctest: +SKIP
    ...     for result in poolhttp.fetch_many_sync(client, urls):
    ...         print(result.key, result.status or result.error)
    """
    request = getattr(client, "request", None)
    if request is None or inspect.iscoroutinefunction(request) or hasattr(client, "aclose"):
        raise TypeError(f"fetch_many_sync needs a poolhttp.Client, not "
                        f"{type(client).__name__} (use fetch_many with an AsyncClient)")
    if isinstance(requests, AsyncIterable) or not isinstance(requests, Iterable) \
            or isinstance(requests, (str, bytes)):
        raise TypeError("requests must be an iterable of URLs or BulkRequests, not "
                        f"{type(requests).__name__}")
    options = resolve(client, concurrency=concurrency, per_host=per_host, rate=rate,
                      backlog=backlog, keep_bodies=keep_bodies, timeout=timeout)
    return SyncResults(client, iter(requests), options)


class SyncResults(Iterator[BulkResult]):
    """The iterator fetch_many_sync returns; also a context manager (`close()` on exit)."""

    def __init__(self, client: Any, items: Iterator[BulkItem], options: Options) -> None:
        self._client = client
        self._items = items
        self._options = options
        self._window: Window[Job] = Window(options.concurrency, options.per_host, options.rate,
                                           options.backlog,
                                           lookahead=options.backlog)
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._ready: deque[BulkResult] = deque()
        self._workers: list[threading.Thread] = []
        self._index = 0
        self._input_done = False
        self._input_error: Exception | None = None
        self._closed = False

    def __iter__(self) -> SyncResults:
        return self

    def __next__(self) -> BulkResult:
        if self._closed:
            raise StopIteration
        try:
            return self._next()
        except BaseException:
            self.close()  # end of input, the caller's iterable failed, or Ctrl-C
            raise

    def _next(self) -> BulkResult:
        while True:
            if self._ready:
                return self._ready.popleft()
            self._fill()
            if self._ready:
                continue
            if self._input_done and self._window.idle:
                if self._input_error is not None:  # after every result of what was pulled
                    error, self._input_error = self._input_error, None
                    raise error
                raise StopIteration
            self._collect()

    def _fill(self) -> None:
        """Start parked jobs, then pull and admit input while the window wants it."""
        now = time.monotonic()
        while (job := self._window.next_job(now)) is not None:
            self._send(job)
        while not self._input_done and self._window.wants_input() \
                and len(self._ready) < self._options.concurrency:
            try:
                item = next(self._items)
            except StopIteration:
                self._input_done = True
                break
            except Exception as exc:  # the caller's iterable failed: finish what runs first
                self._input_done = True
                self._input_error = exc
                break
            prepared = prepare(item, self._index, self._options.base_url)
            self._index += 1
            if isinstance(prepared, BulkResult):
                self._ready.append(prepared)
            elif self._window.admit(prepared, time.monotonic()):
                self._send(prepared)

    def _collect(self) -> None:
        """Wait for a result (or until a rate-limited origin is due) and book it."""
        wakeup = self._window.next_wakeup()
        wait = None if wakeup is None else max(0.0, wakeup - time.monotonic())
        try:
            job, result = self._done.get(timeout=wait)
        except queue.Empty:
            return
        self._window.finish(job, time.monotonic())
        self._ready.append(result)

    def _send(self, job: Job) -> None:
        if len(self._workers) < self._window.in_flight:
            # The worker gets no reference to `self`, so an abandoned iterator can still be
            # collected, and its __del__ then tells the workers to exit.
            worker = threading.Thread(target=_worker, name="poolhttp.fetch_many_sync",
                                      args=(self._client, self._options, self._work,
                                            self._done), daemon=True)
            worker.start()
            self._workers.append(worker)
        self._work.put(job)

    def close(self) -> None:
        """Drop jobs not yet started, let requests in flight end, and join every worker."""
        if self._closed:
            return
        self._closed = True
        while True:  # jobs no worker took yet are dropped, not sent
            try:
                self._work.get_nowait()
            except queue.Empty:
                break
        for _ in self._workers:
            self._work.put(None)
        for worker in self._workers:
            worker.join()
        self._workers.clear()
        self._ready.clear()

    def __enter__(self) -> SyncResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An abandoned iterator must not leave threads blocked on the work queue forever.
        if not getattr(self, "_closed", True):
            for _ in getattr(self, "_workers", ()):
                self._work.put(None)


def _worker(client: Any, options: Options, work: queue.SimpleQueue[_Work],
            done: queue.SimpleQueue[_Done]) -> None:
    while (job := work.get()) is not None:
        done.put((job, _fetch(client, options, job)))


def _fetch(client: Any, options: Options, job: Job) -> BulkResult:
    started = time.monotonic()
    counter = attempt_counter(client, options)
    try:
        if options.keep_bodies:
            response = client.request(job.method, job.url, headers=job.headers,
                                      content=job.body, timeout=options.timeout, trace=counter)
            body = response.content
            size, digest, kept = len(body), hashlib.sha256(body).hexdigest(), body
        else:
            with client.stream(job.method, job.url, headers=job.headers, content=job.body,
                               timeout=options.timeout, trace=counter) as response:
                hasher = hashlib.sha256()
                size = 0
                for chunk in response.iter_bytes():
                    hasher.update(chunk)
                    size += len(chunk)
            digest, kept = hasher.hexdigest(), None
    except Exception as exc:
        return failed(job.key, str(job.url), job.method, exc, time.monotonic() - started,
                      attempts(counter), job.origin)
    return succeeded(job, response, kept, size, digest, time.monotonic() - started,
                     attempts(counter))

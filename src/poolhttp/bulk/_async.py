"""`fetch_many`: the bulk fetcher for an `AsyncClient`.

One task per request in flight (never per input item), one feeder task pulling the input, and
the caller's `async for` taking results. Everything runs on one event loop, so the window's
bookkeeping needs no lock: each step runs to completion between awaits.

Backpressure: a request starts only while fewer than `concurrency` results wait to be taken,
so a slow consumer holds at most `concurrency` requests in flight plus `concurrency` results
(with their bodies) in memory, and the input is not pulled ahead of that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from poolhttp import Timeout

from ._options import AttemptCounter, Options, attempt_counter, attempts, resolve
from ._types import BulkItem, BulkResult, Job, failed, prepare, succeeded
from ._window import Window

__all__ = ["fetch_many"]


def fetch_many(client: Any, requests: Iterable[BulkItem] | AsyncIterable[BulkItem], *,
               concurrency: int | None = None, per_host: int | None = None,
               rate: float | None = None, keep_bodies: bool = True,
               backlog: int | None = None,
               timeout: Timeout | float | None = None) -> AsyncGenerator[BulkResult, None]:
    """Fetch every item of `requests` with `client` (an AsyncClient); yield results as they
    complete.

    `requests` is an iterable or async iterable of URL strings, `poolhttp.URL`s or
    `BulkRequest`s, pulled lazily. One result comes out per item, failures included (a
    failure never stops the run). Limits:

    - `concurrency` (default 64, or less if the client's pool is smaller): requests in flight;
    - `per_host` (default 8): requests in flight to one origin;
    - `rate` (default None: unlimited): requests per second started per origin;
    - `backlog` (default 10,000): items held back while their origin is saturated, or read
      ahead while every slot is busy, so that a freed slot can go on with its origin's next
      item on the connection that has just gone idle.

    `keep_bodies=False` streams each body through SHA-256 and keeps only its size and digest.
    `timeout` overrides the client's time-outs for these requests (None: the client's).
    Arguments are checked at once (TypeError/ValueError). Close the iterator early with
    `contextlib.aclosing(...)` to cancel what is in flight at once; otherwise that happens when
    it is garbage-collected or the event loop shuts down.

    >>> async with poolhttp.AsyncClient() as client:                     # doctest: +SKIP
    ...     async for result in poolhttp.fetch_many(client, urls, per_host=4):
    ...         print(result.key, result.status or result.error)
    """
    if not hasattr(client, "aclose"):
        raise TypeError(f"fetch_many needs a poolhttp.AsyncClient, not {type(client).__name__}"
                        " (use fetch_many_sync with a poolhttp.Client)")
    if not isinstance(requests, (Iterable, AsyncIterable)) or isinstance(requests, (str, bytes)):
        raise TypeError("requests must be an iterable or async iterable of URLs or "
                        f"BulkRequests, not {type(requests).__name__}")
    options = resolve(client, concurrency=concurrency, per_host=per_host, rate=rate,
                      backlog=backlog, keep_bodies=keep_bodies, timeout=timeout)
    return _results(client, requests, options)


async def _results(client: Any, requests: Iterable[BulkItem] | AsyncIterable[BulkItem],
                   options: Options) -> AsyncGenerator[BulkResult, None]:
    run = _Run(client, requests, options, asyncio.get_running_loop())
    try:
        while True:
            while run.ready:
                yield run.ready.popleft()
                run.pump()  # taking a result may unblock the window
            if run.finished:
                break
            await run.wait()
        if run.input_error is not None:
            raise run.input_error
    finally:
        await run.aclose()


class _Run:
    """The state of one fetch_many call."""

    def __init__(self, client: Any, requests: Iterable[BulkItem] | AsyncIterable[BulkItem],
                 options: Options, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop
        self.options = options
        self.window: Window[Job] = Window(options.concurrency, options.per_host, options.rate,
                                          options.backlog,
                                          lookahead=options.backlog)
        self.ready: deque[BulkResult] = deque()
        self.input_done = False
        self.input_error: BaseException | None = None
        self._requests = requests
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeder_waiter: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._feeder = loop.create_task(self._feed(), name="poolhttp.fetch_many feeder")

    # -- the consumer's side -----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.input_done and self.window.idle and not self.ready

    async def wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- starting requests -------------------------------------------------------------------
    def pump(self) -> None:
        """Start every parked job that may start, then let the feeder pull more input."""
        if len(self.ready) >= self.options.concurrency:
            return  # the consumer is behind: start nothing until it catches up
        now = self._loop.time()
        while (job := self.window.next_job(now)) is not None:
            self._launch(job)
        self._arm_timer()
        if self._feeder_waiter is not None and not self._feeder_waiter.done() \
                and self._wants_input():
            self._feeder_waiter.set_result(None)

    def _wants_input(self) -> bool:
        return self.window.wants_input() and len(self.ready) < self.options.concurrency

    def _launch(self, job: Job) -> None:
        task = self._loop.create_task(self._fetch(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _arm_timer(self) -> None:
        """Wake up when a rate-limited origin becomes due (one timer for the whole run)."""
        when = self.window.next_wakeup()
        if self._timer is not None:
            # Compared with the time we asked for: uvloop's call_at returns a plain Handle,
            # with no when(), for a time already due.
            if when is not None and self._timer_when == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self.pump()

    # -- the input ---------------------------------------------------------------------------
    async def _feed(self) -> None:
        """Pull items while the window wants them; park or start each one."""
        try:
            if isinstance(self._requests, AsyncIterable):
                await self._feed_async(self._requests.__aiter__())
            else:
                await self._feed_sync(iter(self._requests))
        except Exception as exc:  # the caller's iterable failed: finish what runs, then raise
            self.input_error = exc
        finally:
            self.input_done = True
            self._wake()

    async def _feed_sync(self, items: Iterator[BulkItem]) -> None:
        index = 0
        while True:
            if not self._wants_input():
                await self._input_wanted()
            try:
                item = next(items)
            except StopIteration:
                return
            self._admit(item, index)
            index += 1

    async def _feed_async(self, items: AsyncIterator[BulkItem]) -> None:
        index = 0
        while True:
            if not self._wants_input():
                await self._input_wanted()
            try:
                item = await items.__anext__()
            except StopAsyncIteration:
                return
            self._admit(item, index)
            index += 1

    async def _input_wanted(self) -> None:
        while not self._wants_input():
            self._feeder_waiter = self._loop.create_future()
            try:
                await self._feeder_waiter
            finally:
                self._feeder_waiter = None

    def _admit(self, item: BulkItem, index: int) -> None:
        job = prepare(item, index, self.options.base_url)
        if isinstance(job, BulkResult):  # unusable item: its failure is its result
            self.ready.append(job)
            self._wake()
        elif self.window.admit(job, self._loop.time()):
            self._launch(job)
        else:
            self._arm_timer()

    # -- one request -------------------------------------------------------------------------
    async def _fetch(self, job: Job) -> None:
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        started = time.perf_counter()
        counter = attempt_counter(self.client, self.options)
        try:
            result = await self._exchange(job, counter, started)
        except Exception as exc:
            result = failed(job.key, str(job.url), job.method, exc,
                            time.perf_counter() - started,
                            attempts(counter), job.origin)
        self.window.finish(job, self._loop.time())
        self.ready.append(result)
        self._wake()
        self.pump()

    async def _exchange(self, job: Job, counter: AttemptCounter | None,
                        started: float) -> BulkResult:
        if self.options.keep_bodies:
            response = await self.client.request(job.method, job.url, headers=job.headers,
                                                 content=job.body,
                                                 timeout=self.options.timeout, trace=counter)
            body = response.content
            size, digest, kept = len(body), hashlib.sha256(body).hexdigest(), body
        else:
            async with self.client.stream(job.method, job.url, headers=job.headers,
                                          content=job.body, timeout=self.options.timeout,
                                          trace=counter) as response:
                hasher = hashlib.sha256()
                size = 0
                async for chunk in response.aiter_bytes():
                    hasher.update(chunk)
                    size += len(chunk)
            digest, kept = hasher.hexdigest(), None
        return succeeded(job, response, kept, size, digest, time.perf_counter() - started,
                         attempts(counter))

    # -- ending ------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel the feeder and every request in flight, and wait until they are gone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending: list[asyncio.Task[None]] = list(self._tasks)
        if not self._feeder.done():
            pending.append(self._feeder)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()

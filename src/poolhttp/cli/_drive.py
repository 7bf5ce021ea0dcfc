"""Running a `poolhttp fetch` plan on the event loop.

Three tasks: the consumer (takes results from `fetch_many` and hands rows to the outputs), a
ticker (redraws progress and commits a batch that has waited long enough), and `fetch_many`'s
own. SIGINT/SIGTERM cancel the consumer: closing `fetch_many` cancels the requests in flight
(they were not stored, so a resume sends them again), then `finish` saves every result taken.
A second Ctrl-C quits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from poolhttp import AsyncClient, BulkRequest, fetch_many

from ._errors import CliError
from ._fetch import FetchArgs, Outcome, Plan, client_options, finish, open_plan, salvage
from ._inputs import BadLine
from ._outputs import bad_row, result_row
from ._report import Reporter, make_reporter

if TYPE_CHECKING:
    from ._cluster import ClusterArgs

__all__ = ["drive", "fetch_command", "run_loop"]

T = TypeVar("T")
_SHOW_BAD = 20  # malformed lines reported one by one; the rest are counted
_SNAPSHOT_SECONDS = 1.0  # how often the pool and progress are recorded in `snapshots`
_POOL_SECONDS = 1.0  # how often the progress asks the pool for its figures


def run_loop(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on asyncio or uvloop ('auto': uvloop when it is installed)."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise CliError("--loop uvloop: uvloop is not installed "
                               "(pip install 'poolhttp[uvloop]')") from None
        else:
            return uvloop.run(main())
    return asyncio.run(main())


def fetch_command(args: FetchArgs, cluster: ClusterArgs | None = None) -> int:
    """`poolhttp fetch` with parsed flags: the exit status. With `cluster` (--engine dask) the
    requests go to a Dask cluster (`_cluster`); the plan and the store are the same."""
    args.per_host = min(args.per_host, args.concurrency)  # a cap above the total is moot
    plan = open_plan(args)
    try:
        if cluster is not None:
            from ._cluster import run_on_cluster

            outcome = run_on_cluster(plan, cluster)
        else:
            outcome = run_loop(args.loop, lambda: drive(plan))
        return finish(plan, outcome, sys.stderr if args.jsonl == "-" else sys.stdout)
    except BaseException:
        salvage(plan)
        raise
    finally:
        plan.close()


async def drive(plan: Plan) -> Outcome:
    """Fetch everything the plan's input holds (or until a signal); rows go to the outputs."""
    reporter = make_reporter(plan.args.progress, sys.stderr, plan.total, "fetch",
                             plan.args.progress_interval)
    stop = _Stop()
    try:
        async with AsyncClient(**client_options(plan)) as client:
            worker = asyncio.create_task(_consume(plan, client, reporter))
            ticker = asyncio.create_task(_tick(plan, client, reporter, worker, stop))
            with _signals(worker, reporter, stop):
                await asyncio.wait([worker])
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            pool = client.stats()
            reporter.update(plan.stats, pool)
    finally:
        reporter.stop()
        plan.stats.ended = time.monotonic()
    error = None if worker.cancelled() else worker.exception()
    if error is not None:
        raise error
    if stop.failure is not None:
        raise stop.failure
    return Outcome(interrupted=worker.cancelled(), signal=stop.signal, pool=pool)


class _Stop:
    signal: str | None = None
    failure: BaseException | None = None  # the ticker's, which cancels the consumer


@contextlib.contextmanager
def _signals(worker: asyncio.Task[None], reporter: Reporter, stop: _Stop) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        if stop.signal is not None:
            return
        stop.signal = name
        reporter.log(f"{name}: stopping, saving the results so far (Ctrl-C again quits at "
                     "once)")
        worker.cancel()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C: KeyboardInterrupt

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum.name)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or a platform without it: Ctrl-C still interrupts
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def _consume(plan: Plan, client: AsyncClient, reporter: Reporter) -> None:
    items = _items(plan, reporter)
    results = fetch_many(client, items, concurrency=plan.args.concurrency,
                         per_host=plan.args.per_host,
                         rate=plan.args.rate, keep_bodies=plan.keep_bodies)
    run_id, session = plan.run.run_id, plan.run.session
    add, count = plan.outputs.add, plan.stats.add
    try:
        async with contextlib.aclosing(results):
            async for result in results:
                line, key = result.key
                add(result_row(run_id, session, line, key, result))
                count(result)
    finally:
        await items.aclose()


async def _items(plan: Plan, reporter: Reporter) -> AsyncGenerator[BulkRequest, None]:
    """The input's records as BulkRequests keyed (line, key); malformed lines are reported
    and stored, and on resume the lines already stored are skipped."""
    done = _DoneLines(plan)
    async for number, raw in plan.source.lines():
        request = request_of(plan, reporter, done, number, raw)
        if request is not None:
            yield request
    plan.input_exhausted = True


def request_of(plan: Plan, reporter: Reporter, done: _DoneLines, number: int,
               raw: bytes) -> BulkRequest | None:
    """One input line as a BulkRequest keyed (line, key), or None: already stored (resume),
    blank or a comment, or malformed (reported and stored). Both drivers read lines so."""
    plan.lines_read = number
    if done.has(number):
        plan.stats.skipped += 1
        return None
    record = plan.parser.feed(number, raw)
    if record is None:
        return None
    if isinstance(record, BadLine):
        _malformed(plan, reporter, record)
        return None
    return BulkRequest(record.url, method=record.method or plan.method,
                       headers=record.headers, body=record.body, key=(number, record.key))


class _DoneLines:
    """Merges the stored line numbers (ascending) with the input's, in step: O(1) memory."""

    def __init__(self, plan: Plan) -> None:
        store = plan.store
        self._lines = store.done_lines(plan.run.run_id) if store and plan.args.resume else None
        self._next = next(self._lines, None) if self._lines is not None else None

    def has(self, number: int) -> bool:
        if self._next is None or self._lines is None:
            return False
        while self._next is not None and self._next < number:
            self._next = next(self._lines, None)
        return self._next == number


def _malformed(plan: Plan, reporter: Reporter, bad: BadLine) -> None:
    plan.stats.malformed += 1
    plan.outputs.add(bad_row(plan.run.run_id, plan.run.session, bad, plan.method))
    if plan.stats.malformed <= _SHOW_BAD:
        # Once, escaped: problems that quote the line quote it with repr() already.
        quoted = bad.text in bad.problem or repr(bad.text) in bad.problem
        shown = "" if quoted else f": {bad.text!r}"
        reporter.log(f"{plan.source.label}:{bad.line}: skipped: {bad.problem}{shown}")
    if plan.stats.malformed == _SHOW_BAD:
        reporter.log("further malformed lines are not shown; they are stored with "
                     "error_type 'MalformedLine'")


async def _tick(plan: Plan, client: AsyncClient, reporter: Reporter, worker: asyncio.Task[None],
                stop: _Stop) -> None:
    """Redraw progress and commit batches that waited long enough, a few times a second."""
    store = plan.store
    next_snapshot = next_pool = 0.0
    pool = client.stats()
    try:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if now >= next_pool:  # stats() walks every origin: a thousand of them cost ~10 ms
                pool = client.stats()
                next_pool = now + _POOL_SECONDS
            if store is not None and now >= next_snapshot:
                next_snapshot = now + _SNAPSHOT_SECONDS
                stats = plan.stats
                store.snapshot(plan.run, (stats.done, stats.failed, pool.connections,
                                          pool.idle, pool.waiting, pool.created, pool.reused))
            plan.outputs.flush_if_due()
            reporter.update(plan.stats, pool)
    except CliError as exc:  # writing results failed: stop the run, report it
        stop.failure = exc
        worker.cancel()

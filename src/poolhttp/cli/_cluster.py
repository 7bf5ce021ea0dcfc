"""`poolhttp fetch --engine dask`: the same run, its requests sent by a Dask cluster.

The plan (input, database, resume) is `_fetch`'s, unchanged; only where the requests go
differs. This process reads the input once (skipping stored lines on resume, storing malformed
ones), hands items keyed (line, key) to `fetch_distributed`, and stores each chunk's results
as they come back, in the same schema as a local run. `--workers N` starts a local cluster of
N processes; `--scheduler ADDRESS` uses a running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from poolhttp import BulkRequest

from ._errors import CliError
from ._fetch import Outcome, Plan, client_options
from ._outputs import result_row
from ._report import make_reporter

__all__ = ["ClusterArgs", "cluster_args", "run_on_cluster"]


@dataclass
class ClusterArgs:
    engine: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    threads: int = 2
    chunk: int = 500


def cluster_args(ns: Any) -> ClusterArgs | None:
    """The cluster flags of a parsed command line; None for a local run. CliError if they
    contradict each other."""
    engine = getattr(ns, "engine", None)
    workers = getattr(ns, "workers", None)
    scheduler = getattr(ns, "scheduler", None)
    if engine is None:
        if workers is not None or scheduler is not None:
            raise CliError("--workers and --scheduler need --engine dask")
        return None
    if not _have_distributed():
        raise CliError("--engine dask needs Dask's distributed scheduler: "
                       "pip install 'poolhttp[dask]'")
    if workers is not None and scheduler is not None:
        raise CliError("--workers starts a local cluster, --scheduler uses a running one: "
                       "give one of them")
    return ClusterArgs(engine, workers, scheduler, getattr(ns, "worker_threads", None) or 2,
                       getattr(ns, "chunk", None) or 500)


def _have_distributed() -> bool:
    """Whether `distributed` can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, say
        return False


def run_on_cluster(plan: Plan, cluster: ClusterArgs) -> Outcome:
    """Fetch the plan's input on the cluster; rows go to the plan's outputs."""
    from poolhttp.bulk import fetch_distributed

    try:
        import distributed as dask_distributed
    except ImportError:
        raise CliError("--engine dask needs Dask's distributed scheduler: "
                       "pip install 'poolhttp[dask]'") from None
    distributed: Any = dask_distributed  # partly untyped
    args = plan.args
    reporter = make_reporter(args.progress, sys.stderr, plan.total, "fetch",
                             args.progress_interval)
    options = client_options(plan)
    options.pop("limits", None)  # each worker sizes its pool to its tasks
    stop: list[str] = []
    previous = _on_signals(stop)
    client: Any = None
    run: Any = None
    interrupted = False
    try:
        with contextlib.ExitStack() as stack:
            if cluster.scheduler is not None:
                try:
                    client = stack.enter_context(distributed.Client(cluster.scheduler,
                                                                    timeout="10s"))
                except OSError as exc:
                    raise CliError(f"--scheduler {cluster.scheduler}: {exc}") from None
            run = stack.enter_context(fetch_distributed(
                _items(plan, reporter), client=client, workers=cluster.workers or 2,
                threads_per_worker=cluster.threads, chunk_size=cluster.chunk,
                concurrency=args.concurrency, per_host=args.per_host, rate=args.rate,
                keep_bodies=plan.keep_bodies, client_options=options))
            run_id, session = plan.run.run_id, plan.run.session
            add, count = plan.outputs.add, plan.stats.add
            next_tick = next_log = time.monotonic()
            try:
                for result in run:
                    line, key = result.key
                    add(result_row(run_id, session, line, key, result))
                    count(result)
                    now = time.monotonic()
                    if now >= next_tick:
                        next_tick = now + 0.25
                        plan.outputs.flush_if_due()
                        reporter.update(plan.stats, None)
                        if now >= next_log and args.progress != "none":
                            next_log = now + max(args.progress_interval, 1.0)
                            reporter.log(_workers_line(run.workers, plan.stats.seconds))
                    if stop:
                        interrupted = True
                        break
            except KeyboardInterrupt:
                stop.append("SIGINT")
                interrupted = True
            reporter.update(plan.stats, None)
            if args.progress != "none":
                reporter.log(_workers_line(run.workers, plan.stats.seconds))
    finally:
        _restore(previous)
        reporter.stop()
        plan.stats.ended = time.monotonic()
    return Outcome(interrupted=interrupted, signal=stop[0] if stop else None,
                   pool=None if run is None else run.pool_stats())


def _workers_line(workers: dict[str, Any], seconds: float) -> str:
    if not workers:
        return "workers: none has returned a chunk yet"
    parts = [f"{name} {fig.results:,} ({fig.results / max(seconds, 1e-9):,.0f}/s, "
             f"{fig.chunks} chunks, {fig.created:,} connections opened)"
             for name, fig in sorted(workers.items())]
    return "workers: " + " · ".join(parts)


def _on_signals(stop: list[str]) -> dict[int, Any]:
    """SIGTERM (and a first SIGINT) ask the loop to stop after the result in hand; a second
    SIGINT raises KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.append(name)
        print(f"{name}: stopping, saving the results so far (Ctrl-C again quits at once)",
              file=sys.stderr)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[signum] = signal.signal(signum, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, old in previous.items():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, old)


def _items(plan: Plan, reporter: Any) -> Iterator[BulkRequest]:
    """The input's records as BulkRequests keyed (line, key), read synchronously; as
    `_drive._items`: stored lines skipped on resume, malformed lines stored and reported."""
    from ._drive import _DoneLines, request_of

    done = _DoneLines(plan)
    for number, raw in _sync_lines(plan):
        request = request_of(plan, reporter, done, number, raw)
        if request is not None:
            yield request
    plan.input_exhausted = True


def _sync_lines(plan: Plan) -> Iterator[tuple[int, bytes]]:
    """The source's lines, stepped on a private event loop (a pipe's reader thread included)."""
    loop = asyncio.new_event_loop()
    lines = plan.source.lines()
    try:
        while True:
            try:
                yield loop.run_until_complete(lines.__anext__())
            except StopAsyncIteration:
                return
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(lines.aclose())  # type: ignore[attr-defined]
        loop.close()

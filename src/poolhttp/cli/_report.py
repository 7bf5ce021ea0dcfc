"""What `poolhttp fetch` tells you: live progress while it runs, a summary at the end.

Progress goes to standard error: a rich progress bar on a terminal, a plain line every few
seconds otherwise (logs, CI). It is redrawn from a snapshot a few times a second, never per
result, so its cost does not grow with the request rate. Every figure here uses bounded memory:
latency percentiles come from a log-bucketed histogram (1% resolution), not a list of samples.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from poolhttp import BulkResult, PoolStats

__all__ = ["LatencyHistogram", "Reporter", "RunStats", "listed", "make_reporter", "plural",
           "render_summary"]


class LatencyHistogram:
    """Counts of durations in buckets 1% wide (log scale): percentiles within 1%."""

    _SCALE = 100.0  # buckets per factor e

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        self._buckets[math.floor(math.log(max(seconds, 1e-7)) * self._SCALE)] += 1

    def percentile(self, p: float) -> float | None:
        """The duration below which `p` percent of samples fall (None if there are none)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(math.exp((bucket + 0.5) / self._SCALE), self.max)
        return self.max


@dataclass
class RunStats:
    """Counters of one session of a run (what this process did)."""

    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    requests: int = 0
    responses: int = 0
    failed: int = 0
    malformed: int = 0
    bytes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    skipped: int = 0  # records already in the database (resume)

    def add(self, result: BulkResult) -> None:
        self.requests += 1
        self.latency.add(result.elapsed)
        if result.status is not None:
            self.responses += 1
            self.statuses[result.status] += 1
            self.bytes += result.size
        else:
            self.failed += 1
            self.errors[result.error_type or "Error"] += 1

    @property
    def done(self) -> int:
        return self.requests + self.malformed

    @property
    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class Reporter(Protocol):
    def update(self, stats: RunStats, pool: PoolStats | None) -> None: ...
    def log(self, message: str) -> None: ...
    def stop(self) -> None: ...


class _Rate:
    """Requests per second over the last few seconds."""

    def __init__(self, span: float = 5.0) -> None:
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        self._span = span

    def __call__(self, done: int) -> float:
        now = time.monotonic()
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > self._span:
            samples.popleft()
        elapsed = now - samples[0][0]
        return (done - samples[0][1]) / elapsed if elapsed > 0 else 0.0


def _reuse(pool: PoolStats) -> str:
    served = pool.created + pool.reused
    return f"{100.0 * pool.reused / served:.1f}%" if served else "-"


def _pool_text(pool: PoolStats | None) -> str:
    if pool is None:
        return ""
    return f"conns {pool.connections} open/{pool.idle} idle · reuse {_reuse(pool)}"


TOP_ORIGINS = 3  # origins shown in the live progress: the busiest by open connections


def top_origins(pool: PoolStats | None, n: int = TOP_ORIGINS) -> list[tuple[str, PoolStats]]:
    """The `n` origins with the most connections open (then waiting requests)."""
    if pool is None or not pool.per_host:
        return []
    return heapq.nlargest(n, pool.per_host.items(),
                          key=lambda item: (item[1].connections, item[1].waiting))


def origin_text(origin: str, stats: PoolStats) -> str:
    return (f"{origin} {stats.connections} open/{stats.idle} idle/{stats.waiting} waiting · "
            f"reuse {_reuse(stats)}")


def eta_text(done: int, total: int | None, rate: float) -> str:
    """'ETA 1:02:03' from the recent rate; '' when it cannot be told."""
    if not total or rate <= 0 or done >= total:
        return ""
    seconds = int((total - done) / rate + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else \
        f"ETA {minutes}:{seconds:02d}"


class _PoolProgress(Progress):
    """A progress bar with the busiest origins' connections under it."""

    origins: list[str] = []  # replaced per instance, on each update

    def get_renderables(self) -> Iterator[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for line in self.origins:
            yield Text("  " + line, style="dim", overflow="ellipsis", no_wrap=True)


class BarReporter:
    """A rich progress bar on a terminal."""

    def __init__(self, file: IO[str], total: int | None, label: str) -> None:
        self._console = Console(file=file, stderr=True)
        self._total = total
        self._progress = _PoolProgress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,}/{task.fields[total_text]}"),
            TextColumn("{task.fields[rate]}"), TextColumn("[red]{task.fields[errors]}"),
            TextColumn("{task.fields[pool]}"), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self._console, refresh_per_second=4, transient=False)
        self._progress.origins = []
        self._task = self._progress.add_task(
            label, total=total, total_text=f"{total:,}" if total is not None else "?",
            rate="", errors="", pool="", eta="")
        self._rate = _Rate()
        self._progress.start()

    def update(self, stats: RunStats, pool: PoolStats | None) -> None:
        done = stats.done + stats.skipped
        rate = self._rate(stats.done)
        self._progress.origins = [origin_text(o, s) for o, s in top_origins(pool)]
        self._progress.update(
            self._task, completed=done, rate=f"{rate:,.0f} req/s",
            errors=errors_text(stats), pool=_pool_text(pool),
            eta=eta_text(done, self._total, rate))

    def log(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        self._progress.stop()


class PlainReporter:
    """One line every `interval` seconds, for logs and pipes."""

    def __init__(self, file: IO[str], total: int | None, interval: float) -> None:
        self._file = file
        self._total = total
        self._interval = interval
        self._next = time.monotonic() + interval
        self._rate = _Rate(span=max(interval, 5.0))

    def update(self, stats: RunStats, pool: PoolStats | None) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        done = stats.done + stats.skipped
        rate = self._rate(stats.done)
        if self._total:
            where = f"{done:,}/{self._total:,} ({100.0 * done / self._total:.1f}%)"
        else:
            where = f"{done:,}"
        line = (f"[{time.strftime('%H:%M:%S')}] fetched {where} · {rate:,.0f} req/s · "
                f"{errors_text(stats) or '0 errors'}")
        if pool is not None:
            line += " · " + _pool_text(pool)
        eta = eta_text(done, self._total, rate)
        if eta:
            line += " · " + eta
        busiest = top_origins(pool, 1)
        if busiest and len(pool.per_host if pool else ()) > 1:
            line += " · busiest " + origin_text(*busiest[0])
        print(line, file=self._file, flush=True)

    def log(self, message: str) -> None:
        print(message, file=self._file, flush=True)

    def stop(self) -> None:
        pass


class NoReporter:
    """No progress; messages (malformed lines, stopping) still go to standard error."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def update(self, stats: RunStats, pool: PoolStats | None) -> None:
        pass

    def log(self, message: str) -> None:
        print(message, file=self._file, flush=True)

    def stop(self) -> None:
        pass


def make_reporter(mode: str, file: IO[str], total: int | None, label: str,
                  interval: float) -> Reporter:
    """`mode` is auto (a bar on a terminal, else plain lines), bar, plain or none."""
    if mode == "auto":
        mode = "bar" if file.isatty() else "plain"
    if mode == "bar":
        return BarReporter(file, total, label)
    if mode == "plain":
        return PlainReporter(file, total, interval)
    return NoReporter(file)


# -- the summary -------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n:,} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):  # decimal units, like network rates
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:,.1f} {unit}"


def listed(items: list[tuple[str, int]], limit: int = 8) -> str:
    text = " · ".join(f"{name} {count:,}" for name, count in items[:limit])
    if len(items) > limit:
        text += f" · {len(items) - limit} more"
    return text or "-"


def summary_rows(stats: RunStats, pool: PoolStats | None) -> list[tuple[str, str]]:
    """(label, value) lines of the summary, shared by the table and tests."""
    seconds = max(stats.seconds, 1e-9)
    classes: Counter[str] = Counter()
    for status, count in stats.statuses.items():
        classes[f"{status // 100}xx"] += count
    lat = stats.latency
    rows = [
        ("requests", f"{stats.requests:,}"),
        ("responses", f"{stats.responses:,} ({listed(sorted(classes.items()))})"
         if classes else f"{stats.responses:,}"),
        ("errors", f"{stats.failed:,} ({listed(stats.errors.most_common())})"
         if stats.failed else "0"),
        ("status", listed([(str(k), v) for k, v in stats.statuses.most_common()])),
        ("latency", f"p50 {_ms(lat.percentile(50))} · p95 {_ms(lat.percentile(95))} · "
                    f"p99 {_ms(lat.percentile(99))} · max {_ms(lat.max if lat.count else None)}"),
        ("throughput", f"{stats.requests / seconds:,.0f} req/s over {seconds:,.2f} s"),
    ]
    if pool is not None:
        served = pool.created + pool.reused
        reuse = f"{100.0 * pool.reused / served:.1f}%" if served else "-"
        rows.append(("connections", f"{pool.created:,} opened for {stats.requests:,} requests "
                                    f"(reuse {reuse})"))
    rows.append(("bytes", f"{_size(stats.bytes)} of response bodies"))
    if stats.malformed:
        rows.append(("malformed", f"{stats.malformed:,} input lines skipped"))
    if stats.skipped:
        rows.append(("resumed", f"{stats.skipped:,} records were already stored"))
    return rows


def render_summary(file: IO[str], title: str, rows: list[tuple[str, str]]) -> None:
    # Off a terminal (logs, pipes) lines are not folded at 80 columns: grep needs them whole.
    width = None if file.isatty() else 200
    console = Console(file=file, highlight=False, width=width)
    console.print(title, markup=False, soft_wrap=True)
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def errors_text(stats: RunStats, limit: int = 3) -> str:
    """'3 errors (ConnectError 2 · ReadTimeout 1)': failures by kind; '' when there are none."""
    if not stats.failed:
        return ""
    return f"{plural(stats.failed, 'error')} ({listed(stats.errors.most_common(), limit)})"


def plural(n: int, noun: str) -> str:
    """'1 error', '2 errors', '1,234 errors'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"

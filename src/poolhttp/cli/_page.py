"""`poolhttp report DB -o report.html`: one run of `poolhttp fetch` as a page of charts.

The page is one self-contained HTML file: plotly.js and the styles are inlined, so it opens
offline and fetches nothing. It shows the run (its list, sessions, options, totals, duration
and exit state), then charts drawn by plotly: throughput over time, latency percentiles over
time, a latency histogram, statuses and errors, connections and reuse over time, and a table
per origin (requests, errors, p50/p95, connections opened, reuse).

The database is opened read-only, after the checks of `poolhttp export`, and the run is
chosen as export chooses it (`_export.ResultsSource`, `_export._choose_run`): the newest, or
--run N. Everything is aggregated in SQL, so memory stays bounded whatever the size of the
run (a 1M-row run takes no more memory than a 3,000-row one, and some seconds): time series
are GROUP BY time buckets (about TIME_BUCKETS of them), the histogram a GROUP BY of
log-spaced bins of elapsed time, and percentiles are exact (nearest rank) in two steps: the
bin counts of each group (time bucket, origin, the whole run) tell which bin holds each
wanted rank, then only the rows of those bins are sorted, in SQLite, and `row_number()`
picks the ranks. Results are streamed in group order; Python only holds aggregates.

Time on the charts is "active time": the sessions of a run (a run resumed is several) laid
back to back, each session's start marked, so that a resume a day later leaves no empty day.

plotly is imported only here (the `report` extra); without it the command says what to
install.
"""

from __future__ import annotations

import argparse
import heapq
import html
import importlib
import json
import math
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MALFORMED, CliError
from ._export import ResultsSource, _choose_run, _Target

__all__ = ["BINS_PER_DECADE", "PERCENTILES", "REPORT_HINT", "TIME_BUCKETS", "TOP_ORIGINS",
           "Report", "collect", "render", "run_report"]

REPORT_HINT = "pip install 'poolhttp[report]'"

TIME_BUCKETS = 240  # points on the time charts, about (a bucket is at least MIN_BUCKET long)
MIN_BUCKET = 0.05  # seconds
BINS_PER_DECADE = 20  # latency histogram: log-spaced bins, 12% wide
TOP_ORIGINS = 50  # rows of the per-origin table (the origins with the most requests)
TOP_ERRORS = 10  # rows of the table of error messages
PERCENTILES = (500, 900, 950, 990)  # per mille; nearest rank: the ceil(p*n)-th smallest

# Nice bucket widths, in seconds.
_WIDTHS = (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
           7200, 10800, 21600, 43200, 86400)
# Colours of the status classes, on every chart.
_CLASS_COLOURS = {"2xx": "#2ca02c", "3xx": "#1f77b4", "4xx": "#ff7f0e", "5xx": "#d62728",
                  "other": "#9467bd", "errors": "#7f1d1d"}
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_NA = "\N{EN DASH}"  # shown for a figure that was not recorded


# -- the command ------------------------------------------------------------------------------
def run_report(args: argparse.Namespace) -> int:
    plotly = import_plotly()
    output = args.output
    source = ResultsSource.open(Path(args.db), command="report")
    try:
        run_id = _choose_run(source, args.run_id, False, command="report",
                             doing="reporting on", others="--run N for another")
        assert run_id is not None
        try:
            report = collect(source.connection, run_id)
        except sqlite3.Error as exc:
            raise CliError(f"{source.path}: reading results failed: {exc}",
                           status=EXIT_FAILED) from None
    finally:
        source.close()
    page = render(report, plotly).encode("utf-8")
    target = _Target(output)
    out = target.open()
    try:
        out.write(page)
        target.commit()
    except OSError as exc:
        target.discard()
        raise CliError(f"{target.label}: writing failed: {exc.strerror or exc}",
                       status=EXIT_FAILED) from None
    except BaseException:
        target.discard()
        raise
    if output not in (None, "-"):
        print(f"poolhttp report: run {run_id} ({report.totals.rows:,} records) to "
              f"{target.label}", file=sys.stderr)
    return 0


def import_plotly() -> ModuleType:
    """plotly.io, or a CliError that says how to install it."""
    try:
        importlib.import_module("plotly")
        return importlib.import_module("plotly.io")
    except ImportError as exc:
        raise CliError(f"the report draws its charts with plotly ({exc}): "
                       f"{REPORT_HINT}") from None


# -- what the page shows ----------------------------------------------------------------------
@dataclass
class Totals:
    rows: int = 0
    responses: int = 0
    failed: int = 0  # no response: connect errors, time-outs, ...
    malformed: int = 0
    bytes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # error_type -> rows (no response)


@dataclass
class Session:
    number: int
    state: str
    started_at: float
    ended_at: float | None
    end: float  # ended_at, or for a session that died its last result
    requests: int | None
    host: str | None
    pid: int | None
    options: dict[str, Any]
    created: int | None  # the pool's figures at the session's end
    reused: int | None
    offset: float = 0.0  # where the session starts on the charts' time axis (active time)

    @property
    def seconds(self) -> float:
        return max(self.end - self.started_at, 0.0)


@dataclass
class OriginRow:
    origin: str
    requests: int
    responses: int
    errors: int
    client_errors: int  # 4xx
    server_errors: int  # 5xx
    p50: float | None = None
    p95: float | None = None
    created: int | None = None
    reused: int | None = None


@dataclass
class Series:
    """A time series on the charts' time axis: x in active seconds, one list per name."""

    x: list[float] = field(default_factory=list)
    y: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, x: float, **values: float | None) -> None:
        self.x.append(x)
        for name, value in values.items():
            self.y.setdefault(name, []).append(value)


@dataclass
class Report:
    run_id: int
    input: str
    state: str
    lines: int | None
    started_at: float
    finished_at: float | None
    options: dict[str, Any]
    sessions: list[Session]
    totals: Totals
    width: float  # seconds per time bucket
    latency: dict[int, float]  # per mille -> seconds, over every response
    latency_min: float | None
    latency_max: float | None
    latency_mean: float | None
    throughput: Series
    percentiles: Series
    histogram: list[tuple[float, float, int]]  # (from, to) seconds, responses
    pool: Series
    origins: list[OriginRow]
    origin_count: int
    error_messages: list[tuple[str, str, int]]
    created: int | None  # connections opened over the run (None: not recorded)
    reused: int | None

    @property
    def active_seconds(self) -> float:
        return sum(s.seconds for s in self.sessions)

    @property
    def exit_status(self) -> int | None:
        """What `poolhttp fetch` exits with for this run, as far as the run is over."""
        if self.state == "done":
            return EXIT_MALFORMED if self.totals.malformed else 0
        if self.state == "interrupted":
            return EXIT_INTERRUPTED
        return None


# -- reading the database ---------------------------------------------------------------------
def collect(conn: sqlite3.Connection, run_id: int) -> Report:
    """Everything the page shows about run `run_id`, aggregated in SQL: about six passes
    over the run's rows, whatever their number, and only aggregates come out."""
    _ensure_ln(conn)
    run = conn.execute("SELECT input, options, state, lines, started_at, updated_at, "
                       "finished_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    tables = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    scan = _scan(conn, run_id)
    sessions = _sessions(conn, run_id, run, scan.extents, "sessions" in tables)
    _session_table(conn, sessions)
    active = sum(s.seconds for s in sessions)
    width = next((w for w in _WIDTHS if w * TIME_BUCKETS >= active), _WIDTHS[-1])
    if width == _WIDTHS[-1]:
        width = math.ceil(active / TIME_BUCKETS / 86400) * 86400.0
    created = reused = None
    if any(s.created is not None for s in sessions):
        created = sum(s.created or 0 for s in sessions)
        reused = sum(s.reused or 0 for s in sessions)
    bins = _Bins.over(scan.latency_min or _FLOOR)
    timeline = _timeline(conn, run_id, bins, sessions, width)
    origins, origin_count = _origins(conn, run_id, bins, "sessions" in tables)
    return Report(
        run_id=run_id, input=run[0], state=run[2], lines=run[3], started_at=run[4],
        finished_at=run[6], options=_json(run[1]), sessions=sessions, totals=scan.totals,
        width=width, latency=timeline.overall, latency_min=scan.latency_min,
        latency_max=scan.latency_max, latency_mean=scan.latency_mean,
        throughput=timeline.throughput, percentiles=timeline.percentiles,
        histogram=timeline.histogram,
        pool=_pool_over_time(conn, run_id, sessions, width, "snapshots" in tables),
        origins=origins, origin_count=origin_count,
        error_messages=[(str(t), str(e or ""), int(n)) for t, e, n in conn.execute(
            "SELECT error_type, error, count(*) FROM fetches WHERE run_id = ? AND status IS "
            "NULL AND error_type IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ?",
            (run_id, TOP_ERRORS))],
        created=created, reused=reused)


def _ensure_ln(conn: sqlite3.Connection) -> None:
    """SQLite's ln() exists only when it was built with its math functions: else Python's."""
    try:
        conn.execute("SELECT ln(2.0)").fetchone()
    except sqlite3.OperationalError:
        conn.create_function("ln", 1, math.log, deterministic=True)


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _sessions(conn: sqlite3.Connection, run_id: int, run: tuple[Any, ...],
              extents: dict[int, tuple[float, float]], have_table: bool) -> list[Session]:
    sessions: list[Session] = []
    if have_table:
        rows = conn.execute(
            "SELECT session, state, started_at, ended_at, requests, host, pid, options, "
            "json_extract(pool, '$.total.created'), json_extract(pool, '$.total.reused') "
            "FROM sessions WHERE run_id = ? ORDER BY session", (run_id,)).fetchall()
        last_snapshot = dict(conn.execute(
            "SELECT session, max(at) FROM snapshots WHERE run_id = ? GROUP BY session",
            (run_id,)).fetchall())
        for number, state, started, ended, requests, host, pid, options, made, again in rows:
            first, last = extents.get(number, (None, None))
            start = min(started, first) if first is not None else started
            end = ended if ended is not None else max(
                v for v in (last, last_snapshot.get(number), start) if v is not None)
            sessions.append(Session(number, state, start, ended, end, requests, host, pid,
                                    _json(options), made, again))
    # Sessions with results but no row of their own (schema 1 has no sessions table): from
    # their results, the first starting with the run, the last ending with it.
    numbers = sorted({*extents, *(s.number for s in sessions)} or {1})
    have = {s.number for s in sessions}
    for number in numbers:
        if number in have:
            continue
        first, last = extents.get(number, (run[4], run[4]))
        is_first, is_last = number == numbers[0], number == numbers[-1]
        start = min(run[4], first) if is_first else first
        ended = run[6] if is_last else None
        end = ended if ended is not None else max(last, run[5] if is_last else last, start)
        sessions.append(Session(number, run[2] if is_last else "interrupted", start, ended,
                                end, None, None, None,
                                _json(run[1]).get("settings") or {}, None, None))
    sessions.sort(key=lambda s: s.number)
    offset = 0.0
    for s in sessions:
        s.offset = offset
        offset += s.seconds
    return sessions


def _session_table(conn: sqlite3.Connection, sessions: Sequence[Session]) -> None:
    """temp.report_sessions: each session's start (Unix time) and offset on the time axis,
    for the queries to bucket rows by (session, seconds into it)."""
    conn.execute("DROP TABLE IF EXISTS temp.report_sessions")
    conn.execute("CREATE TEMP TABLE report_sessions (session INTEGER PRIMARY KEY, "
                 "start REAL NOT NULL, offset REAL NOT NULL)")
    conn.executemany("INSERT INTO temp.report_sessions VALUES (?, ?, ?)",
                     [(s.number, s.started_at, s.offset) for s in sessions])


@dataclass
class _Scan:
    totals: Totals
    extents: dict[int, tuple[float, float]]  # session -> its first and last result's time
    latency_min: float | None = None
    latency_max: float | None = None
    latency_mean: float | None = None


def _scan(conn: sqlite3.Connection, run_id: int) -> _Scan:
    """One pass: what the run stored (by status and error), when each session stored its
    first and last result, and the least, greatest and mean elapsed time of responses."""
    scan = _Scan(Totals(), {})
    totals = scan.totals
    low = high = None
    elapsed_sum, elapsed_n = 0.0, 0
    for session, status, error_type, n, size, first, last, least, most, total, timed in \
            conn.execute(
                "SELECT session, status, error_type, count(*), sum(size), min(fetched_at), "
                "max(fetched_at), min(elapsed), max(elapsed), sum(elapsed), count(elapsed) "
                "FROM fetches WHERE run_id = ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (run_id,)):
        known = scan.extents.get(session)
        scan.extents[session] = (first, last) if known is None else (
            min(known[0], first), max(known[1], last))
        totals.rows += n
        if status is not None:
            totals.responses += n
            totals.statuses[status] = totals.statuses.get(status, 0) + n
            totals.bytes += size or 0
            if timed:
                low = least if low is None else min(low, least)
                high = most if high is None else max(high, most)
                elapsed_sum += total
                elapsed_n += timed
        elif error_type == "MalformedLine":
            totals.malformed += n
        else:
            key = error_type or "Error"
            totals.failed += n
            totals.errors[key] = totals.errors.get(key, 0) + n
    scan.latency_min, scan.latency_max = low, high
    scan.latency_mean = elapsed_sum / elapsed_n if elapsed_n else None
    return scan


def _n(condition: str) -> str:
    """SQL: how many rows of the group meet `condition` (0, not NULL, for none)."""
    return f"count(CASE WHEN {condition} THEN 1 END)"


_BUCKET = "CAST((f.fetched_at - s.start) / :width AS INTEGER)"
_BUCKETED = ("FROM fetches AS f JOIN temp.report_sessions AS s ON s.session = f.session "
             "WHERE f.run_id = :run")


@dataclass(frozen=True)
class _Bins:
    """Log-spaced bins of elapsed times, BINS_PER_DECADE to a power of ten from 10**first
    seconds: `sql` is a row's bin, the same expression in every query."""

    first: int
    sql: str = ("CAST((ln(max(f.elapsed, :bin_floor)) - :bin_base) / :bin_step "
                "AS INTEGER)")

    @classmethod
    def over(cls, low: float) -> _Bins:
        return cls(math.floor(math.log10(max(low, _FLOOR))))

    @property
    def params(self) -> dict[str, float]:
        return {"bin_floor": _FLOOR, "bin_base": self.first * math.log(10),
                "bin_step": math.log(10) / BINS_PER_DECADE}

    def edges(self, b: int) -> tuple[float, float]:
        return (10 ** (self.first + b / BINS_PER_DECADE),
                10 ** (self.first + (b + 1) / BINS_PER_DECADE))


_FLOOR = 1e-6  # seconds: a 0 elapsed time (a coarse clock) counts in the first bin


Wanted = dict[tuple[Any, ...], list[int]]  # (*group, bin, rank in the bin) -> per mille


def _place(wanted: Wanted, key: tuple[Any, ...], counts: Sequence[tuple[int, int]]) -> None:
    """Find the bin and the rank in it of each percentile of a group whose responses are
    `counts` [(bin, responses), ...] (ascending bins): nearest rank, ceil(p * n)."""
    n = sum(c for _, c in counts)
    for pm in PERCENTILES:
        rank = max(1, (n * pm + 999) // 1000)
        below = 0
        for b, c in counts:
            if rank <= below + c:
                wanted.setdefault((*key, b, rank - below), []).append(pm)
                break
            below += c


def _pick(conn: sqlite3.Connection, bins: _Bins, keys: Sequence[str], source: str,
          values: dict[str, Any], wanted: Wanted) -> dict[tuple[Any, ...], dict[int, float]]:
    """The elapsed times at the `wanted` ranks: only the rows of the bins they fall in are
    sorted (by group, bin and elapsed time), and row_number() picks the ranks. The wanted
    (group, bin, rank) go in temp.report_ranks. {group: {per mille: seconds}}."""
    out: dict[tuple[Any, ...], dict[int, float]] = {}
    if not wanted:
        return out
    width = len(keys)
    columns = [f"key{i}" for i in range(width)]
    conn.execute("DROP TABLE IF EXISTS temp.report_ranks")
    conn.execute(f"CREATE TEMP TABLE report_ranks ({', '.join(columns)}, bin, k)")
    conn.executemany(f"INSERT INTO temp.report_ranks VALUES ({', '.join('?' * (width + 2))})",
                     list(wanted))
    named = ", ".join(f"{k} AS key{i}" for i, k in enumerate(keys))
    ranked = ", ".join(f"ranked.{c}" for c in columns)
    inner = ", ".join(f"b.{c}" for c in columns)
    sql = (f"SELECT {ranked}, ranked.bin, ranked.k, ranked.elapsed FROM ("
           f"SELECT {', '.join(f'b.{c} AS {c}' for c in columns)}, b.bin AS bin, "
           f"b.elapsed AS elapsed, row_number() OVER (PARTITION BY {inner}, b.bin "
           f"ORDER BY b.elapsed) AS k FROM ("
           f"SELECT {named}, {bins.sql} AS bin, f.elapsed AS elapsed {source} "
           f"AND f.status IS NOT NULL AND f.elapsed IS NOT NULL) AS b "
           f"WHERE ({inner}, b.bin) IN (SELECT {', '.join(columns)}, bin "
           f"FROM temp.report_ranks)) AS ranked "
           f"WHERE ({ranked}, ranked.bin, ranked.k) IN (SELECT * FROM temp.report_ranks)")
    for *key, b, k, elapsed in conn.execute(sql, {**bins.params, **values}):
        for pm in wanted.get((*key, b, k), ()):
            out.setdefault(tuple(key), {})[pm] = elapsed
    return out


def _percentiles(conn: sqlite3.Connection, bins: _Bins, keys: Sequence[str], source: str,
                 values: dict[str, Any]) -> dict[tuple[Any, ...], dict[int, float]]:
    """Exact percentiles (nearest rank) of the elapsed time of responses, per value of the
    SQL expressions `keys`, from the rows of `source` (FROM ... WHERE ...). Two passes,
    neither of which sorts every row: a GROUP BY counts each group's responses per bin
    (streamed in group order, one group's bins held at a time), which places each rank in a
    bin; then _pick."""
    groups = ", ".join(keys)
    wanted: Wanted = {}
    current: tuple[Any, ...] | None = None
    counts: list[tuple[int, int]] = []
    for *key, b, c in conn.execute(
            f"SELECT {groups}, {bins.sql}, count(*) {source} AND f.status IS NOT NULL AND "
            f"f.elapsed IS NOT NULL GROUP BY {groups}, {len(keys) + 1} "
            f"ORDER BY {groups}, {len(keys) + 1}", {**bins.params, **values}):
        if tuple(key) != current:
            if current is not None:
                _place(wanted, current, counts)
            current, counts = tuple(key), []
        counts.append((b, c))
    if current is not None:
        _place(wanted, current, counts)
    return _pick(conn, bins, keys, source, values, wanted)


@dataclass
class _Timeline:
    throughput: Series
    percentiles: Series
    histogram: list[tuple[float, float, int]]
    overall: dict[int, float]


_CLASSES = (("2xx", "f.status BETWEEN 200 AND 299"), ("3xx", "f.status BETWEEN 300 AND 399"),
            ("4xx", "f.status BETWEEN 400 AND 499"), ("5xx", "f.status BETWEEN 500 AND 599"),
            ("other", "f.status < 200 OR f.status > 599"), ("errors", "f.status IS NULL"))


def _timeline(conn: sqlite3.Connection, run_id: int, bins: _Bins,
              sessions: Sequence[Session], width: float) -> _Timeline:
    """Throughput, latency percentiles per time bucket, and the latency histogram and
    percentiles of the whole run, from one GROUP BY (session, bucket, latency bin) streamed
    in that order, then one _pick for the buckets' percentiles and one for the run's.

    Throughput: results per bucket by status class and errors (malformed lines are not
    requests), over the bucket's seconds: its width, or for one cut short by the end of its
    session the part of it the session covered (a quarter at least)."""
    throughput, percentiles = Series(), Series()
    by_number = {s.number: s for s in sessions}
    values = {"run": run_id, "width": width}
    total: dict[int, int] = {}  # latency bin -> responses, over the run
    wanted: Wanted = {}
    current: tuple[int, int] | None = None
    classes: dict[str, int] = {}
    counts: list[tuple[int, int]] = []

    def close(key: tuple[int, int]) -> None:
        session = by_number[key[0]]
        covered = max(min(width, session.seconds - key[1] * width), width / 4)
        throughput.add(session.offset + key[1] * width, seconds=covered, **classes)
        if counts:
            _place(wanted, key, counts)

    rows = conn.execute(
        f"SELECT f.session, {_BUCKET}, CASE WHEN f.status IS NOT NULL AND f.elapsed IS NOT "
        f"NULL THEN {bins.sql} END, {', '.join(_n(c) for _, c in _CLASSES)} {_BUCKETED} "
        "AND f.error_type IS NOT 'MalformedLine' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        {**bins.params, **values})
    for session, bucket, b, *numbers in rows:
        key = (session, bucket)
        if key != current:
            if current is not None:
                close(current)
            current, classes, counts = key, dict.fromkeys(dict(_CLASSES), 0), []
        for (name, _), n in zip(_CLASSES, numbers, strict=True):
            classes[name] += n
        if b is not None:
            responses = sum(numbers)
            counts.append((b, responses))
            total[b] = total.get(b, 0) + responses
    if current is not None:
        close(current)
    found = _pick(conn, bins, ["f.session", _BUCKET], _BUCKETED, values, wanted)
    for (session, bucket), marks in sorted(found.items()):
        percentiles.add(by_number[session].offset + (bucket + 0.5) * width,
                        **{f"p{p / 10:g}": marks.get(p) for p in PERCENTILES})
    overall: Wanted = {}
    if total:
        _place(overall, ("all",), sorted(total.items()))
    picked = _pick(conn, bins, ["'all'"], "FROM fetches AS f WHERE f.run_id = :run",
                   {"run": run_id}, overall)
    return _Timeline(throughput, percentiles,
                     [(*bins.edges(b), n) for b, n in sorted(total.items())],
                     picked.get(("all",), {}))


def _pool_over_time(conn: sqlite3.Connection, run_id: int, sessions: Sequence[Session],
                    width: float, have_table: bool) -> Series:
    """From `snapshots` (about one a second): connections open and idle, requests waiting,
    and per bucket the share of requests sent on a reused connection. A session's last
    point is its pool's figures at its end (`sessions.pool`), when recorded."""
    series = Series()
    if not have_table:
        return series
    rows = conn.execute(
        "SELECT n.session, CAST((n.at - s.start) / :width AS INTEGER) AS b, max(n.at), "
        "max(n.created), max(n.reused), avg(n.open), avg(n.idle), avg(n.waiting) "
        "FROM snapshots AS n JOIN temp.report_sessions AS s ON s.session = n.session "
        "WHERE n.run_id = :run GROUP BY 1, 2 ORDER BY 1, 2", {"run": run_id, "width": width})
    by_session: dict[int, list[tuple[Any, ...]]] = {}  # bounded: a row per bucket
    for row in rows:
        by_session.setdefault(row[0], []).append(row[2:])
    made = again = 0
    since = 0.0  # seconds into the session of the previous point

    def point(session: Session, at: float, created: int, reused: int,
              open_: float | None, idle: float | None, waiting: float | None) -> None:
        nonlocal made, again, since
        new, old = created - made, reused - again
        share = 100.0 * old / (new + old) if new + old > 0 else None
        total = 100.0 * reused / (created + reused) if created + reused > 0 else None
        into = max(at - session.started_at, 0.0)
        series.add(session.offset + into, open=open_, idle=idle, waiting=waiting, reuse=share,
                   reuse_so_far=total, opened=new / max(into - since, width))
        made, again, since = created, reused, into

    for session in sessions:
        made, again, since = 0, 0, 0.0
        for at, created, reused, open_, idle, waiting in by_session.get(session.number, ()):
            point(session, at, created, reused, open_, idle, waiting)
        if session.created is not None and session.reused is not None \
                and session.ended_at is not None:
            point(session, session.ended_at, session.created, session.reused, None, None,
                  None)
    return series


def _origins(conn: sqlite3.Connection, run_id: int, bins: _Bins,
             have_sessions: bool) -> tuple[list[OriginRow], int]:
    """The TOP_ORIGINS origins with the most requests, and how many origins there are: the
    groups are streamed through a heap of TOP_ORIGINS, however many origins the run has."""
    groups = conn.execute(
        f"SELECT origin, count(*), count(status), {_n('status IS NULL')}, "
        f"{_n('status BETWEEN 400 AND 499')}, {_n('status BETWEEN 500 AND 599')} FROM fetches "
        "WHERE run_id = ? AND origin IS NOT NULL GROUP BY origin", (run_id,))
    count = 0

    def counted() -> Iterator[tuple[Any, ...]]:
        nonlocal count
        for row in groups:
            count += 1
            yield row

    rows = [OriginRow(*row) for row in heapq.nsmallest(
        TOP_ORIGINS, counted(), key=lambda row: (-row[1], row[0]))]
    if not rows:
        return rows, count
    conn.execute("DROP TABLE IF EXISTS temp.report_origins")
    conn.execute("CREATE TEMP TABLE report_origins (origin TEXT PRIMARY KEY)")
    conn.executemany("INSERT INTO temp.report_origins VALUES (?)", [(r.origin,) for r in rows])
    marks = _percentiles(conn, bins, ["f.origin"], "FROM fetches AS f WHERE f.run_id = :run "
                         "AND f.origin IN temp.report_origins", {"run": run_id})
    pools: dict[str, tuple[int, int]] = {}
    if have_sessions:
        pools = {origin: (made, again) for origin, made, again in conn.execute(
            "SELECT o.key, sum(json_extract(o.value, '$.created')), "
            "sum(json_extract(o.value, '$.reused')) FROM sessions AS s, "
            "json_each(s.pool, '$.origins') AS o WHERE s.run_id = ? AND s.pool IS NOT NULL "
            "AND o.key IN temp.report_origins GROUP BY o.key", (run_id,))}
    for row in rows:
        found = marks.get((row.origin,), {})
        row.p50, row.p95 = found.get(500), found.get(950)
        if row.origin in pools:
            row.created, row.reused = pools[row.origin]
    return rows, count


# -- the page ---------------------------------------------------------------------------------
def render(report: Report, pio: ModuleType) -> str:
    """The whole page: plotly.js inlined once, then each chart's div and script."""
    plotlyjs = importlib.import_module("plotly.offline").get_plotlyjs()
    charts = [
        ("throughput", "Throughput", _throughput_figure(report),
         "Results per second in each interval, by status class; errors are results without "
         "a response."),
        ("latency-time", "Latency percentiles over time", _latency_time_figure(report),
         "Exact percentiles (nearest rank) of the responses' elapsed time (retries "
         "included) in each interval."),
        ("latency-histogram", "Latency histogram", _histogram_figure(report),
         f"Responses by elapsed time, {BINS_PER_DECADE} bins to each power of ten."),
        ("statuses", "Statuses and errors", _status_figure(report),
         "Every record of the run: responses by status, requests that got no response by "
         "error, and malformed input lines."),
        ("reuse", "Connections and reuse over time", _reuse_figure(report),
         "From the pool's snapshots (about one a second): the share of requests sent on a "
         "connection that was already open, connections opened per second, and the pool's "
         "open and idle connections and waiting requests."),
    ]
    sections = []
    for div_id, title, figure, note in charts:
        if figure is None:
            body = '<p class="empty">Nothing to show: the run has no such data.</p>'
        else:
            body = pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=div_id,
                               config=_PLOT_CONFIG, default_height="420px")
        sections.append(f'<section class="chart"><h2>{_e(title)}</h2>'
                        f'<p class="note">{_e(note)}</p>{body}</section>')
    title = f"poolhttp report: run {report.run_id} of {report.input}"
    return _PAGE.format(
        title=_e(title), style=_STYLE, plotlyjs=plotlyjs, header=_header(report),
        charts="\n".join(sections[:4]), reuse=sections[4], origins=_origins_table(report),
        errors=_errors_table(report),
        footer=_e(f"Made by poolhttp report at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; percentiles are "
                  "exact (nearest rank) over the responses' elapsed time."))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script>{plotlyjs}</script>
</head>
<body>
<main>
{header}
{charts}
{errors}
{reuse}
{origins}
<footer>{footer}</footer>
</main>
</body>
</html>
"""

_STYLE = """
body { margin: 0; background: #f4f5f7; color: #1f2933;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 4px; }
.sub { color: #52606d; margin: 0 0 16px; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(160px, 1fr));
         gap: 10px; margin: 16px 0; }
.card { background: #fff; border-radius: 8px; padding: 10px 14px;
        box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
.card .v { font-size: 20px; font-weight: 600; }
.card .k { color: #52606d; font-size: 13px; }
.card.bad .v { color: #b91c1c; } .card.good .v { color: #15803d; }
section { background: #fff; border-radius: 8px; padding: 16px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
.note { color: #52606d; margin: 0 0 8px; font-size: 13px; }
.empty { color: #7b8794; font-style: italic; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e4e7eb;
         vertical-align: top; }
th { background: #f8f9fa; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td code, dd code { font-size: 13px; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: #52606d; } dd { margin: 0; word-break: break-word; }
footer { color: #7b8794; font-size: 12px; margin: 24px 0; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return _NA
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s"


def _when(unix: float | None) -> str:
    if unix is None:
        return _NA
    millis = int(unix % 1 * 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix)) + f".{millis:03d}Z"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return _NA
    return f"{100 * part / whole:.1f}%"


_EXIT_MEANING = {0: "done", EXIT_MALFORMED: "done, malformed input lines were skipped",
                 EXIT_INTERRUPTED: "interrupted: `poolhttp fetch --resume` continues it"}


def _header(report: Report) -> str:
    t = report.totals
    requests = t.responses + t.failed
    active = report.active_seconds
    rate = requests / active if active > 0 else None
    exit_status = report.exit_status
    state = report.state if exit_status is None else f"{report.state} (exit {exit_status})"
    reuse_total = (report.created or 0) + (report.reused or 0)
    cards = [
        ("state", state, "good" if exit_status == 0 else "bad"),
        ("records", f"{t.rows:,}", ""),
        ("responses", f"{t.responses:,}", ""),
        ("errors", f"{t.failed:,}", "bad" if t.failed else ""),
        ("malformed lines", f"{t.malformed:,}", "bad" if t.malformed else ""),
        ("throughput", _NA if rate is None else f"{rate:,.0f} req/s", ""),
        ("active time", _duration(active), ""),
        ("p50 latency", _ms(report.latency.get(500)), ""),
        ("p95 latency", _ms(report.latency.get(950)), ""),
        ("p99 latency", _ms(report.latency.get(990)), ""),
        ("connections opened", _NA if report.created is None else f"{report.created:,}", ""),
        ("reuse", _percent(report.reused, reuse_total), ""),
        ("body bytes", _size(t.bytes), ""),
    ]
    card_html = "".join(f'<div class="card {cls}"><div class="v">{_e(v)}</div>'
                        f'<div class="k">{_e(k)}</div></div>' for k, v, cls in cards)
    options = {k: v for k, v in report.options.items() if k != "settings"}
    wall = (report.finished_at or max(s.end for s in report.sessions)) - report.started_at
    details = [
        ("list", f"<code>{_e(report.input)}</code>"),
        ("run", f"{report.run_id} · {len(report.sessions)} "
                f"{'session' if len(report.sessions) == 1 else 'sessions'}"),
        ("state", _e(state + (f": {_EXIT_MEANING[exit_status]}" if exit_status in _EXIT_MEANING
                              else ": still running, or its process died (`--resume` "
                                   "continues it)"))),
        ("input lines", _NA if report.lines is None else f"{report.lines:,}"),
        ("started", _e(_when(report.started_at))),
        ("finished", _e(_when(report.finished_at))),
        ("duration", _e(f"{_duration(active)} active, {_duration(max(wall, 0.0))} from start "
                        "to end")),
        ("records", _e(f"{t.rows:,}: {t.responses:,} responses, {t.failed:,} errors, "
                       f"{t.malformed:,} malformed lines")),
        ("statuses", _e(" · ".join(f"{s} {n:,}" for s, n in sorted(t.statuses.items()))
                        or _NA)),
        ("errors", _e(" · ".join(f"{k} {n:,}" for k, n in sorted(
            t.errors.items(), key=lambda kv: (-kv[1], kv[0]))) or "none")),
        ("latency", _e(" · ".join(
            [f"min {_ms(report.latency_min)}", f"mean {_ms(report.latency_mean)}",
             *(f"p{pm / 10:g} {_ms(report.latency.get(pm))}" for pm in PERCENTILES),
             f"max {_ms(report.latency_max)}"]) if report.latency else "no responses")),
        ("options", f"<code>{_e(json.dumps(options, sort_keys=True))}</code>"),
    ]
    detail_html = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in details)
    session_rows = "".join(
        f"<tr><td class=n>{s.number}</td><td>{_e(_when(s.started_at))}</td>"
        f"<td>{_e(_when(s.ended_at))}</td><td class=n>{_e(_duration(s.seconds))}</td>"
        f"<td>{_e(s.state)}</td><td class=n>{_NA if s.requests is None else f'{s.requests:,}'}"
        f"</td><td class=n>{_NA if s.created is None else f'{s.created:,}'}</td>"
        f"<td class=n>{_e(_percent(s.reused, (s.created or 0) + (s.reused or 0)))}</td>"
        f"<td>{_e(s.host or _NA)}{'' if s.pid is None else f' · pid {s.pid}'}</td>"
        f"<td><code>{_e(json.dumps(s.options, sort_keys=True))}</code></td></tr>"
        for s in report.sessions)
    return (f'<header><h1>poolhttp report: run {report.run_id}</h1>'
            f'<p class="sub">{_e(report.input)}</p></header>'
            f'<div class="cards" id="totals">{card_html}</div>'
            f'<section id="run"><h2>Run</h2><dl>{detail_html}</dl></section>'
            f'<section id="sessions"><h2>Sessions</h2><table id="session-table"><thead><tr>'
            f'<th class=n>#</th>'
            f'<th>started</th><th>ended</th><th class=n>active</th><th>state</th>'
            f'<th class=n>results</th><th class=n>connections</th><th class=n>reuse</th>'
            f'<th>host</th><th>settings</th></tr></thead><tbody>{session_rows}</tbody>'
            f'</table></section>')


def _origins_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td><code>{_e(o.origin)}</code></td><td class=n>{o.requests:,}</td>"
        f"<td class=n>{o.responses:,}</td><td class=n>{o.errors:,}</td>"
        f"<td class=n>{o.client_errors:,}</td><td class=n>{o.server_errors:,}</td>"
        f"<td class=n>{_e(_ms(o.p50))}</td><td class=n>{_e(_ms(o.p95))}</td>"
        f"<td class=n>{_NA if o.created is None else f'{o.created:,}'}</td>"
        f"<td class=n>{_e(_percent(o.reused, (o.created or 0) + (o.reused or 0)))}</td></tr>"
        for o in report.origins)
    more = ""
    if report.origin_count > len(report.origins):
        more = (f'<p class="note">The {len(report.origins)} origins with the most requests, '
                f'of {report.origin_count:,}.</p>')
    if not rows:
        return ('<section id="origins"><h2>Origins</h2><p class="empty">No requests.</p>'
                '</section>')
    return ('<section id="origins"><h2>Origins</h2><p class="note">Errors: requests that got '
            'no response. Connections opened and reuse (the share of requests sent on an '
            'open connection) are the pool\'s, summed over the sessions.</p>'
            f'{more}<table id="origin-table"><thead><tr><th>origin</th>'
            '<th class=n>requests</th><th class=n>responses</th><th class=n>errors</th>'
            '<th class=n>4xx</th><th class=n>5xx</th><th class=n>p50</th><th class=n>p95</th>'
            '<th class=n>connections opened</th><th class=n>reuse</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def _errors_table(report: Report) -> str:
    if not report.error_messages:
        return ""
    rows = "".join(f"<tr><td>{_e(kind)}</td><td><code>{_e(message)}</code></td>"
                   f"<td class=n>{n:,}</td></tr>" for kind, message, n in report.error_messages)
    return ('<section id="errors"><h2>Most frequent errors</h2><table><thead><tr><th>error'
            '</th><th>message</th><th class=n>records</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


# -- the charts: plotly figures as plain dicts ------------------------------------------------
def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 20, "b": 50},
        "legend": {"orientation": "h", "y": 1.08, "x": 0}, "hovermode": "x unified",
    }
    layout.update(extra)
    return layout


def _time_axis(report: Report) -> dict[str, Any]:
    title = ("seconds into the run" if len(report.sessions) == 1
             else "active seconds (sessions back to back)")
    return {"title": {"text": title}, "rangemode": "tozero"}


def _session_marks(report: Report) -> dict[str, Any]:
    """Dashed lines where sessions 2, 3, ... start."""
    shapes, notes = [], []
    for s in report.sessions[1:]:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": s.offset,
                       "x1": s.offset, "y0": 0, "y1": 1,
                       "line": {"dash": "dash", "color": "#7b8794", "width": 1}})
        notes.append({"xref": "x", "yref": "paper", "x": s.offset, "y": 1, "showarrow": False,
                      "text": f"session {s.number}", "xanchor": "left", "yanchor": "top",
                      "font": {"size": 11, "color": "#52606d"}})
    return {"shapes": shapes, "annotations": notes}


def _throughput_figure(report: Report) -> dict[str, Any] | None:
    series = report.throughput
    if not series.x:
        return None
    data = []
    seconds = series.y["seconds"]
    for name, values in series.y.items():
        if name == "seconds" or not any(values):
            continue
        rates = [(n or 0) / (s or report.width) for n, s in zip(values, seconds, strict=True)]
        data.append({"type": "bar", "name": name, "x": series.x, "y": rates,
                     "customdata": values, "offset": 0, "width": report.width,
                     "marker": {"color": _CLASS_COLOURS[name]},
                     "hovertemplate": "%{y:,.0f}/s (%{customdata:,})"})
    return {"data": data, "layout": _layout(
        barmode="stack", bargap=0, xaxis=_time_axis(report),
        yaxis={"title": {"text": "results per second"}, "rangemode": "tozero"},
        **_session_marks(report))}


def _latency_time_figure(report: Report) -> dict[str, Any] | None:
    series = report.percentiles
    if not series.x:
        return None
    data = [{"type": "scatter", "mode": "lines+markers" if len(series.x) < 40 else "lines",
             "name": name, "x": series.x, "y": [None if v is None else v * 1000 for v in values],
             "hovertemplate": "%{y:.3g} ms"}
            for name, values in series.y.items()]
    return {"data": data, "layout": _layout(
        xaxis=_time_axis(report),
        yaxis={"title": {"text": "elapsed (ms)"}, "type": "log"}, **_session_marks(report))}


def _histogram_figure(report: Report) -> dict[str, Any] | None:
    bins = report.histogram
    if not bins:
        return None
    # A step line over log-spaced edges draws the bars right on a log axis.
    # Each point carries its bin: [from ms, to ms, responses].
    x: list[float] = []
    y: list[int] = []
    bin_of: list[list[float]] = []

    def step(at: float, n: int, of: list[float]) -> None:
        x.append(at)
        y.append(n)
        bin_of.append(of)

    for low, high, n in bins:
        of = [low * 1000, high * 1000, n]
        if x and abs(x[-1] - low * 1000) > 1e-9 * low:
            step(x[-1], 0, [x[-1], low * 1000, 0])  # a gap of empty bins
            step(low * 1000, 0, [x[-1], low * 1000, 0])
        elif not x:
            step(low * 1000, 0, of)
        step(low * 1000, n, of)
        step(high * 1000, n, of)
    step(x[-1], 0, bin_of[-1])
    shapes = []
    notes = []
    for pm, colour, top in ((500, "#1f77b4", 1.0), (950, "#ff7f0e", 0.93),
                          (990, "#d62728", 0.86)):
        value = report.latency.get(pm)
        if value is None:
            continue
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": value * 1000,
                       "x1": value * 1000, "y0": 0, "y1": 1,
                       "line": {"dash": "dot", "color": colour, "width": 1.5}})
        # An annotation on a log axis is placed by the log of its value (a shape is not).
        notes.append({"xref": "x", "yref": "paper", "x": math.log10(value * 1000), "y": top,
                      "showarrow": False, "text": f"p{pm / 10:g} {_ms(value)}",
                      "xanchor": "left", "yanchor": "top", "font": {"color": colour}})
    return {"data": [{"type": "scatter", "mode": "lines", "line": {"shape": "linear",
                                                                   "color": "#3b82f6"},
                      "fill": "tozeroy", "name": "responses", "x": x, "y": y,
                      "customdata": bin_of,
                      "hovertemplate": "%{customdata[0]:.3g}-%{customdata[1]:.3g} ms: "
                                       "%{customdata[2]:,}<extra></extra>"}],
            "layout": _layout(xaxis={"title": {"text": "elapsed (ms)"}, "type": "log"},
                              yaxis={"title": {"text": "responses"}, "rangemode": "tozero"},
                              hovermode="closest", showlegend=False, shapes=shapes,
                              annotations=notes)}


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "other"


def _status_figure(report: Report) -> dict[str, Any] | None:
    t = report.totals
    if not t.rows:
        return None
    labels: list[str] = []
    values: list[int] = []
    colours: list[str] = []
    for status, n in sorted(t.statuses.items()):
        labels.append(str(status))
        values.append(n)
        colours.append(_CLASS_COLOURS[_status_class(status)])
    for kind, n in sorted(t.errors.items(), key=lambda kv: (-kv[1], kv[0])):
        labels.append(kind)
        values.append(n)
        colours.append(_CLASS_COLOURS["errors"])
    if t.malformed:
        labels.append("MalformedLine")
        values.append(t.malformed)
        colours.append("#9aa5b1")
    pie = {"type": "pie", "hole": 0.55, "labels": labels, "values": values, "sort": False,
           "marker": {"colors": colours}, "domain": {"x": [0, 0.42]}, "textinfo": "percent",
           "textposition": "inside", "insidetextorientation": "horizontal",
           "hovertemplate": "%{label}: %{value:,} (%{percent})<extra></extra>",
           "name": "records"}
    bars = {"type": "bar", "orientation": "h", "x": values[::-1], "y": labels[::-1],
            "marker": {"color": colours[::-1]}, "xaxis": "x", "yaxis": "y",
            "text": [f"{v:,}" for v in values[::-1]], "textposition": "outside",
            "cliponaxis": False,
            "hovertemplate": "%{y}: %{x:,}<extra></extra>", "name": "records",
            "showlegend": False}
    return {"data": [pie, bars], "layout": _layout(
        hovermode="closest", showlegend=False,
        xaxis={"domain": [0.55, 1], "title": {"text": "records"}, **(
            {"type": "log", "dtick": 1} if max(values) > 50 * min(values) else {})},
        uniformtext={"minsize": 11, "mode": "hide"},
        yaxis={"type": "category", "automargin": True},
        height=max(320, 28 * len(labels) + 120))}


def _reuse_figure(report: Report) -> dict[str, Any] | None:
    series = report.pool
    if not series.x:
        return None
    mode = "lines+markers" if len(series.x) < 40 else "lines"
    y = series.y
    data = [
        {"type": "scatter", "mode": mode, "name": "reuse in the interval (%)", "x": series.x,
         "y": y["reuse"], "xaxis": "x", "yaxis": "y", "line": {"color": "#15803d"},
         "hovertemplate": "%{y:.1f}%"},
        {"type": "scatter", "mode": "lines", "name": "reuse so far (%)", "x": series.x,
         "y": y["reuse_so_far"], "xaxis": "x", "yaxis": "y",
         "line": {"color": "#15803d", "dash": "dot"}, "hovertemplate": "%{y:.1f}%"},
        {"type": "bar", "name": "connections opened per second", "x": series.x,
         "y": y["opened"], "xaxis": "x", "yaxis": "y2", "marker": {"color": "#f59e0b"},
         "opacity": 0.6, "hovertemplate": "%{y:,.1f}/s"},
        {"type": "scatter", "mode": mode, "name": "open", "x": series.x, "y": y["open"],
         "xaxis": "x", "yaxis": "y3", "line": {"color": "#1f77b4"}, "connectgaps": True,
         "hovertemplate": "%{y:,.1f}"},
        {"type": "scatter", "mode": mode, "name": "idle", "x": series.x, "y": y["idle"],
         "xaxis": "x", "yaxis": "y3", "line": {"color": "#17becf"}, "connectgaps": True,
         "hovertemplate": "%{y:,.1f}"},
        {"type": "scatter", "mode": mode, "name": "waiting", "x": series.x,
         "y": y["waiting"], "xaxis": "x", "yaxis": "y3", "line": {"color": "#d62728"},
         "connectgaps": True, "hovertemplate": "%{y:,.1f}"},
    ]
    marks = _session_marks(report)
    return {"data": data, "layout": _layout(
        height=560, xaxis={**_time_axis(report), "anchor": "y3"},
        yaxis={"domain": [0.55, 1], "title": {"text": "reuse (%)"}, "range": [0, 105]},
        yaxis2={"overlaying": "y", "side": "right", "title": {"text": "opened/s"},
                "rangemode": "tozero", "showgrid": False},
        yaxis3={"domain": [0, 0.42], "title": {"text": "connections, requests"},
                "rangemode": "tozero"},
        **marks)}

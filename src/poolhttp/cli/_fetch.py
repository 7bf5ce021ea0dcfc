"""`poolhttp fetch`: check the arguments, open input and outputs, start or resume a run.

Everything that can be refused is refused here, before a single request is sent: bad flags,
an unreadable input, a CSV without a url column, a database that is not ours, a resume that
would not line up. `_drive` then runs the fetch, and `finish` records how it ended.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from poolhttp import Headers, InvalidRequest, Limits, PoolStats, Retry, Timeout

from ._doctor import ensure_fd_budget
from ._errors import EXIT_INTERRUPTED, EXIT_MALFORMED, CliError
from ._inputs import InputSource, RecordParser, format_for, open_source, valid_method
from ._outputs import JsonlWriter, Outputs
from ._report import RunStats, listed, plural, render_summary, summary_rows
from ._store import RunCounts, RunInfo, Store

__all__ = ["FetchArgs", "Outcome", "Plan", "client_options", "finish", "open_plan",
           "salvage"]

DEFAULT_DB = "results.sqlite"

# What `--retries` retries by status (urllib3 leaves 500 out; a bulk run wants it in).
FETCH_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class FetchArgs:
    """The `poolhttp fetch` flags. None means "not given" where a resumed run has its own."""

    urls: str
    db: str | None = None
    jsonl: str | None = None
    concurrency: int = 64
    per_host: int = 8
    rate: float | None = None
    timeout: float | None = None
    retries: int = 0
    keep_bodies: bool | None = None
    header: list[str] = field(default_factory=list)
    method: str | None = None
    resume: bool = False
    new: bool = False
    run_id: int | None = None
    location: bool | None = None
    format: str | None = None
    progress: str = "auto"
    progress_interval: float = 5.0
    batch: int = 1000
    loop: str = "auto"

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> FetchArgs:
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})


@dataclass
class Outcome:
    interrupted: bool
    signal: str | None = None
    pool: PoolStats | None = None  # at the end of the run


@dataclass
class Plan:
    """A run ready to go: what to read, how to send, where to write."""

    args: FetchArgs
    source: InputSource
    parser: RecordParser
    outputs: Outputs
    run: RunInfo
    method: str
    headers: list[tuple[str, str]]
    keep_bodies: bool
    total: int | None
    stats: RunStats = field(default_factory=RunStats)
    lines_read: int = 0
    input_exhausted: bool = False

    @property
    def store(self) -> Store | None:
        return self.outputs.store

    def close(self) -> None:
        self.source.close()
        if self.outputs.jsonl is not None:
            self.outputs.jsonl.close()
        if self.outputs.store is not None:
            self.outputs.store.close()


# -- opening ----------------------------------------------------------------------------------
def open_plan(args: FetchArgs) -> Plan:
    """Open input and outputs and start (or resume) the run; CliError if anything is off.

    Every check comes before the first write, so a refused run leaves no trace: no run row,
    no half-made database or JSONL file (a database is only created once the input passed).
    """
    ensure_fd_budget(args.concurrency)
    if args.resume and args.new:
        raise CliError("--resume and --new contradict each other: continue a run, or start one")
    if args.run_id is not None and not args.resume:
        raise CliError("--run names the run to continue: give it with --resume")
    db_path, jsonl_path = _output_paths(args)
    with contextlib.ExitStack() as stack:
        source = open_source(args.urls)
        stack.callback(source.close)
        if args.resume:
            assert db_path is not None  # _output_paths made sure
            opened = stack.enter_context(contextlib.closing(Store.open(db_path)))
            run = _resumable(opened, source, args)
            store: Store | None = opened
            options = run.options
            _check_header_line(source, options["format"])
        else:
            options = _requested_options(args, source)
            _check_header_line(source, options["format"])
            store = stack.enter_context(contextlib.closing(Store.open(db_path))) \
                if db_path is not None else None
            if store is not None and not args.new:
                _refuse_abandoning(store, source)
        jsonl = stack.enter_context(contextlib.closing(JsonlWriter(jsonl_path))) \
            if jsonl_path is not None else None
        if args.resume:
            assert store is not None
            run = store.resume_run(run, _settings(args))
        else:
            run = _new_run(store, source, options, args)
        plan = Plan(args, source, RecordParser(options["format"]),
                    Outputs(store, jsonl, batch=args.batch), run, method=options["method"],
                    headers=[(h[0], h[1]) for h in options["headers"]],
                    keep_bodies=options["keep_bodies"], total=_total(source, options))
        stack.pop_all()
    return plan


def _total(source: InputSource, options: dict[str, Any]) -> int | None:
    total = source.count_records()
    if total is not None and options["format"] == "csv":
        total = max(0, total - 1)  # the header line
    return total


def _output_paths(args: FetchArgs) -> tuple[str | None, str | None]:
    """SQLite by default; JSONL instead when only --jsonl is given; both when both are."""
    if args.resume and args.db is None and args.jsonl is not None:
        raise CliError("--resume needs the results database of the run: give --db PATH")
    db = args.db if args.db is not None else (DEFAULT_DB if args.jsonl is None else None)
    return db, args.jsonl


def _requested_options(args: FetchArgs, source: InputSource) -> dict[str, Any]:
    """What shapes the results (kept for the whole run, resumes included)."""
    first = source.first_line()
    fmt = format_for(source.name, first[1] if first else None, args.format or "auto")
    try:
        method = valid_method(args.method or "GET")
    except ValueError as exc:
        raise CliError(f"--method: {exc}") from None
    return {"method": method, "headers": parse_headers(args.header), "format": fmt,
            "keep_bodies": bool(args.keep_bodies), "follow_redirects": bool(args.location)}


def _settings(args: FetchArgs) -> dict[str, Any]:
    """What may change from one session of a run to the next (stored per session)."""
    return {"concurrency": args.concurrency, "per_host": args.per_host, "rate": args.rate,
            "timeout": args.timeout, "retries": args.retries, "batch": args.batch,
            "loop": args.loop}


def _new_run(store: Store | None, source: InputSource, options: dict[str, Any],
             args: FetchArgs) -> RunInfo:
    settings = _settings(args)
    options["settings"] = settings  # the first session's, as schema 1 kept them
    if store is None:  # JSONL only: no ledger, run 0
        return RunInfo(0, 1, source.identity, options, "running", None)
    return store.start_run(source.identity, source.fingerprint(), options, settings)


def _unfinished(store: Store, source: InputSource) -> tuple[list[RunInfo], list[RunInfo]]:
    """The runs over this input that did not finish: (resumable ones, ones still running)."""
    resumable, running = [], []
    for run in store.runs_over(source.identity):
        if run.state == "done":
            continue
        if run.state == "running" and _alive(run.pid, run.host):
            running.append(run)
        else:
            resumable.append(run)  # interrupted, or its process died without saying so
    return resumable, running


def _refuse_abandoning(store: Store, source: InputSource) -> None:
    """A new run over a list whose earlier run is unfinished is most likely a forgotten
    --resume: ask, rather than silently leave that run behind for good."""
    resumable, _ = _unfinished(store, source)
    if not resumable:
        return
    names = _run_names(resumable)
    raise CliError(f"{names} over {source.label} in {store.path} did not finish: continue "
                   f"with --resume{_pick(resumable)}, or start over with --new")


def _run_names(runs: list[RunInfo]) -> str:
    ids = ", ".join(str(run.run_id) for run in runs)
    return f"run {ids}" if len(runs) == 1 else f"runs {ids}"


def _pick(runs: list[RunInfo]) -> str:
    return f" --run {runs[-1].run_id}" if len(runs) > 1 else ""


def _resumable(store: Store, source: InputSource, args: FetchArgs) -> RunInfo:
    """The run to resume, checked (nothing is written yet)."""
    if args.run_id is not None:
        run = _named_run(store, source, args.run_id)
    else:
        resumable, running = _unfinished(store, source)
        if len(resumable) > 1:
            raise CliError(f"{_run_names(resumable)} over {source.label} in {store.path} are "
                           f"unfinished: say which to continue with --run N (e.g. "
                           f"--run {resumable[-1].run_id})")
        if resumable:
            run = resumable[0]
        elif running:
            run = running[-1]
            raise CliError(f"run {run.run_id} is still running (process {run.pid}); stop it "
                           "before resuming")
        else:
            runs = store.runs_over(source.identity)
            if not runs:
                raise CliError(f"nothing to resume: {store.path} has no run over "
                               f"{source.label}; run without --resume to start one")
            raise CliError(f"run {runs[-1].run_id} over {source.label} in {store.path} is "
                           "already complete: nothing to resume", status=0)
    _check_same_input(run, source)
    _check_same_options(run, args)
    return run


def _named_run(store: Store, source: InputSource, run_id: int) -> RunInfo:
    run = store.run(run_id)
    if run is None:
        raise CliError(f"--run {run_id}: {store.path} has no such run")
    if run.input != source.identity:
        raise CliError(f"--run {run_id}: that run is over {run.input}, not {source.label}")
    if run.state == "done":
        raise CliError(f"run {run_id} over {source.label} in {store.path} is already "
                       "complete: nothing to resume", status=0)
    if run.state == "running" and _alive(run.pid, run.host):
        raise CliError(f"run {run_id} is still running (process {run.pid}); stop it "
                       "before resuming")
    return run


def _check_same_input(run: RunInfo, source: InputSource) -> None:
    now = source.fingerprint()
    if run.fingerprint is None or now is None:
        print(f"poolhttp fetch: warning: cannot check that {source.label} holds the same "
              f"lines as when run {run.run_id} started; line numbers are trusted to match",
              file=sys.stderr)
        return
    if now != run.fingerprint:
        raise CliError(f"{source.label} changed since run {run.run_id} started (size "
                       f"{run.fingerprint.get('size')} -> {now.get('size')} bytes or different "
                       "content): its line numbers no longer name the same records, so the run "
                       "cannot be resumed; start a new run without --resume")


def _check_same_options(run: RunInfo, args: FetchArgs) -> None:
    stored = run.options
    given = {"method": (args.method or "").upper() or None,
             "headers": parse_headers(args.header) if args.header else None,
             "format": args.format if args.format not in (None, "auto") else None,
             "keep_bodies": args.keep_bodies, "follow_redirects": args.location}
    for name, value in given.items():
        if value is not None and value != stored.get(name, False):
            flag = "--location" if name == "follow_redirects" else "--" + name.replace("_", "-")
            raise CliError(f"{flag} differs from run {run.run_id}'s ({stored.get(name)!r}); a "
                           "resumed run keeps the options it started with (omit the flag)")


def _alive(pid: int | None, host: str | None) -> bool:
    """Is the process that last ran this run still alive on this host?"""
    if pid is None or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):
        return b"poolhttp" in cmdline.read_bytes()  # not a recycled pid
    return True


def _check_header_line(source: InputSource, fmt: str) -> None:
    """A CSV file without a url column is refused up front, not at its first line."""
    first = source.first_line()
    if fmt == "csv" and first is not None:
        RecordParser("csv").feed(first[0], first[1].encode("utf-8"))


def parse_headers(values: list[str]) -> list[list[str]]:
    """'Name: value' flags as [name, value] pairs; CliError naming a bad one."""
    pairs = []
    for text in values:
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {text!r}: expected 'Name: value'")
        pairs.append([name.strip(), value.strip()])
    try:
        Headers([(n, v) for n, v in pairs])
    except InvalidRequest as exc:
        raise CliError(f"--header: {exc}") from None
    return pairs


# -- the client -------------------------------------------------------------------------------
def client_options(plan: Plan) -> dict[str, Any]:
    args = plan.args
    options: dict[str, Any] = {
        "limits": Limits(max_connections=args.concurrency,
                         max_connections_per_host=args.per_host),
        "headers": plan.headers or None,
        "follow_redirects": bool(plan.run.options.get("follow_redirects")),
    }
    if args.timeout is not None:
        options["timeout"] = Timeout(args.timeout)
    if args.retries:
        # Connect, read (idempotent methods) and these statuses, with backoff; when retries
        # run out the last response is kept (its status stored), not turned into an error.
        options["retries"] = Retry(total=args.retries, status_forcelist=FETCH_RETRY_STATUSES,
                                   raise_on_status=False)
    return options


# -- the end ----------------------------------------------------------------------------------
def finish(plan: Plan, outcome: Outcome, out: Any) -> int:
    """Save what is left, mark the run, print the summary; the exit status.

    The summary's figures are this session's (rates, latency, connections); for a resumed run
    a `run` line adds what the whole run stored over all its sessions, and the exit status
    is the whole run's: malformed lines of an earlier session count as much as today's."""
    plan.outputs.flush()
    complete = plan.input_exhausted and not outcome.interrupted
    store = plan.store
    if store is not None:
        store.end_run(plan.run, "done" if complete else "interrupted",
                      plan.lines_read if complete else None, requests=plan.stats.done,
                      pool=pool_figures(outcome.pool))
    rows = summary_rows(plan.stats, outcome.pool)
    state = "complete" if complete else f"interrupted ({outcome.signal or 'stopped'})"
    title = f"poolhttp fetch: {plan.source.label}, {state}"
    counts = store.breakdown(plan.run.run_id) if store is not None else None
    if counts is not None and plan.run.session > 1:
        rows.append(("run", whole_run_text(counts, plan.run.session)))
    if store is not None and counts is not None:
        session = f", session {plan.run.session}" if plan.run.session > 1 else ""
        rows.append(("results", f"{store.path} · run {plan.run.run_id}{session} · "
                                f"{counts.rows:,} records stored"))
        if not complete:
            rows.append(("resume", f"poolhttp fetch {plan.args.urls} --db {store.path} "
                                   f"--resume --run {plan.run.run_id}"))
    if plan.outputs.jsonl is not None:
        rows.append(("jsonl", plan.outputs.jsonl.path if plan.outputs.jsonl.path != "-"
                     else "standard output"))
    render_summary(out, title, rows)
    if not complete:
        return EXIT_INTERRUPTED
    malformed = counts.malformed if counts is not None else plan.stats.malformed
    return EXIT_MALFORMED if malformed else 0


def whole_run_text(counts: RunCounts, sessions: int) -> str:
    """'3 sessions · 20,000 records: 19,950 responses (2xx 19,900 · 5xx 50) · ...'."""
    classes: Counter[str] = Counter()
    for status, n in counts.statuses.items():
        classes[f"{status // 100}xx"] += n
    parts = [f"{counts.responses:,} responses"
             + (f" ({listed(sorted(classes.items()))})" if classes else "")]
    parts.append(plural(counts.failed, "error")
                 + (f" ({listed(counts.errors.most_common())})" if counts.failed else ""))
    if counts.malformed:
        parts.append(f"{plural(counts.malformed, 'malformed line')} skipped")
    return f"{sessions} sessions · {counts.rows:,} records: " + " · ".join(parts)


def pool_figures(pool: PoolStats | None) -> dict[str, Any] | None:
    """The pool's totals and per-origin figures at the end of a session, for `sessions.pool`."""
    if pool is None:
        return None

    def figures(stats: PoolStats) -> dict[str, int]:
        return {"created": stats.created, "reused": stats.reused, "closed": stats.closed,
                "retries": stats.retries}

    return {"total": figures(pool),
            "origins": {origin: figures(stats) for origin, stats in pool.per_host.items()}}


def salvage(plan: Plan) -> None:
    """After a crash: keep what was fetched and leave the run resumable."""
    with contextlib.suppress(Exception):
        plan.outputs.flush()
    if plan.store is not None:
        with contextlib.suppress(Exception):
            plan.store.end_run(plan.run, "interrupted", None, requests=plan.stats.done)

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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from poolhttp import Headers, InvalidRequest, Limits, PoolStats, Retry, Timeout

from ._doctor import ensure_fd_budget
from ._errors import EXIT_INTERRUPTED, EXIT_MALFORMED, CliError
from ._inputs import InputSource, RecordParser, format_for, open_source, valid_method
from ._outputs import JsonlWriter, Outputs
from ._report import RunStats, render_summary, summary_rows
from ._store import RunInfo, Store

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
        jsonl = stack.enter_context(contextlib.closing(JsonlWriter(jsonl_path))) \
            if jsonl_path is not None else None
        if args.resume:
            assert store is not None
            run = store.resume_run(run)
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
            "keep_bodies": bool(args.keep_bodies)}


def _new_run(store: Store | None, source: InputSource, options: dict[str, Any],
             args: FetchArgs) -> RunInfo:
    options["settings"] = {"concurrency": args.concurrency, "per_host": args.per_host,
                           "rate": args.rate, "timeout": args.timeout, "retries": args.retries}
    if store is None:  # JSONL only: no ledger, run 0
        return RunInfo(0, 1, source.identity, options, "running", None)
    return store.start_run(source.identity, source.fingerprint(), options)


def _resumable(store: Store, source: InputSource, args: FetchArgs) -> RunInfo:
    """The run to resume, checked (nothing is written yet)."""
    run = store.latest_run(source.identity)
    if run is None:
        raise CliError(f"nothing to resume: {store.path} has no run over {source.label}; "
                       "run without --resume to start one")
    if run.state == "done":
        raise CliError(f"run {run.run_id} over {source.label} in {store.path} is already "
                       "complete: nothing to resume", status=0)
    if run.state == "running" and _alive(run.pid, run.host):
        raise CliError(f"run {run.run_id} is still running (process {run.pid}); stop it "
                       "before resuming")
    _check_same_input(run, source)
    _check_same_options(run, args)
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
             "keep_bodies": args.keep_bodies}
    for name, value in given.items():
        if value is not None and value != stored[name]:
            flag = "--" + name.replace("_", "-")
            raise CliError(f"{flag} differs from run {run.run_id}'s ({stored[name]!r}); a "
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
    """Save what is left, mark the run, print the summary; the exit status."""
    plan.outputs.flush()
    complete = plan.input_exhausted and not outcome.interrupted
    store = plan.store
    if store is not None:
        store.end_run(plan.run.run_id, "done" if complete else "interrupted",
                      plan.lines_read if complete else None)
    rows = summary_rows(plan.stats, outcome.pool)
    state = "complete" if complete else f"interrupted ({outcome.signal or 'stopped'})"
    title = f"poolhttp fetch: {plan.source.label}, {state}"
    counts = store.count(plan.run.run_id) if store is not None else {}
    if store is not None:
        session = f", session {plan.run.session}" if plan.run.session > 1 else ""
        rows.append(("results", f"{store.path} · run {plan.run.run_id}{session} · "
                                f"{counts['rows']:,} records stored"))
        if not complete:
            rows.append(("resume", f"poolhttp fetch {plan.args.urls} --db {store.path} --resume"))
    if plan.outputs.jsonl is not None:
        rows.append(("jsonl", plan.outputs.jsonl.path if plan.outputs.jsonl.path != "-"
                     else "standard output"))
    render_summary(out, title, rows)
    if not complete:
        return EXIT_INTERRUPTED
    # Malformed lines anywhere in the run (an earlier session's included) make it exit 3.
    malformed = counts["malformed"] if store is not None else plan.stats.malformed
    return EXIT_MALFORMED if malformed else 0


def salvage(plan: Plan) -> None:
    """After a crash: keep what was fetched and leave the run resumable."""
    with contextlib.suppress(Exception):
        plan.outputs.flush()
    if plan.store is not None:
        with contextlib.suppress(Exception):
            plan.store.end_run(plan.run.run_id, "interrupted", None)

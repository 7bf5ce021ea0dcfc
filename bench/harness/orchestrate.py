"""The orchestrator: start nginx, run every (workload, client) job in workers, collect figures.

Runs are interleaved: for each workload, round 1 runs every client once, then round 2, and so
on, so a slow drift of the machine spreads over all clients instead of landing on one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import (
    BODY_1M,
    BODY_16K,
    CLIENTS,
    CLIENTS_BY_KEY,
    HTTP2,
    HTTP11,
    POST_RESPONSE,
    SMALL_BODY,
    WORKLOADS,
    WORKLOADS_BY_NAME,
    ClientRow,
    Workload,
    baseline_key,
    checks_protocol,
    counts_resumption,
    row_concurrency,
    row_concurrency_label,
    row_note,
    runs_on,
)
from .procs import Worker, WorkerError
from .server import Nginx

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent

RUNS = {"full": 5, "short": 3, "smoke": 1}
# Longest a measured phase may run. A client slower than the rest stops here and is rated on
# the requests it finished (flagged in the tables); it keeps the whole run's length bounded.
TIME_LIMIT = {"full": 4.0, "short": 1.5, "smoke": 1.5}
IDLE_MEMORY = "idle-memory"
IDLE_CONNECTIONS = {"full": 512, "short": 256, "smoke": 64}
# The figure barely moves between runs, so fewer runs than the load figures.
IDLE_RUNS = {"full": 3, "short": 1, "smoke": 1}
# Rows measured for memory per idle connection: poolhttp, with aiohttp for scale. (httpx is
# left out: its pool serves n concurrent requests over a handful of connections, so the
# growth per connection would mostly be the garbage of the requests in flight.)
IDLE_CLIENTS = ("poolhttp-asyncio", "poolhttp-uvloop", "aiohttp-asyncio")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                   "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

EXPECT_LEN = {"/small": len(SMALL_BODY), "/16k.bin": BODY_16K, "/1m.bin": BODY_1M,
              "/post": len(POST_RESPONSE)}
# nginx's $server_protocol for each protocol a row may be meant to use.
SERVER_PROTOCOL = {HTTP2: "HTTP/2.0", HTTP11: "HTTP/1.1"}


@dataclass
class Plan:
    mode: str
    runs: int
    clients: list[ClientRow]
    workloads: list[Workload]
    idle_memory: bool
    scale: float
    time_limit: float
    batch: bool  # one worker process per client for all its jobs (smoke only)
    unavailable: dict[str, str] = field(default_factory=dict)

    def requests(self, workload: Workload) -> int:
        return max(1, round(workload.requests[self.mode] * self.scale))

    def jobs(self, clients: list[ClientRow] | None = None) -> int:
        """Load jobs per run: the (client, workload) pairs of the plan that are measured."""
        return sum(runs_on(c, w) for c in (self.clients if clients is None else clients)
                   for w in self.workloads)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def make_plan(args: argparse.Namespace) -> Plan:
    mode = "smoke" if args.smoke else "short" if args.short else "full"
    only = _split(args.only)
    unknown = [k for k in only if k not in CLIENTS_BY_KEY]
    if unknown:
        raise SystemExit(f"unknown client(s): {', '.join(unknown)}; "
                         f"known: {', '.join(CLIENTS_BY_KEY)}")
    wanted = _split(args.workload)
    unknown = [w for w in wanted if w not in WORKLOADS_BY_NAME and w != IDLE_MEMORY]
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(unknown)}; "
                         f"known: {', '.join([*WORKLOADS_BY_NAME, IDLE_MEMORY])}")
    clients = [c for c in CLIENTS if not only or c.key in only]
    if wanted:
        workloads = [w for w in WORKLOADS if w.name in wanted]
    elif mode == "short":
        workloads = [w for w in WORKLOADS if w.in_short]
    else:
        workloads = list(WORKLOADS)
    # Only workloads some chosen row runs (--only poolhttp-h2-asyncio: the HTTP/2 ones).
    workloads = [w for w in workloads if any(runs_on(c, w) for c in clients)]
    idle = (not wanted or IDLE_MEMORY in wanted) and any(c.key in IDLE_CLIENTS for c in clients)
    runs = args.runs if args.runs else RUNS[mode]
    plan = Plan(mode=mode, runs=runs, clients=clients, workloads=workloads, idle_memory=idle,
                scale=args.scale, time_limit=args.time_limit or TIME_LIMIT[mode],
                batch=mode == "smoke" and not args.fresh_processes)
    if not plan.jobs() and not idle:
        # e.g. --only poolhttp-asyncio --workload h2-c64: the HTTP/2 workloads have rows of
        # their own (poolhttp-h2-asyncio, ...).
        raise SystemExit("no row of --only runs on the chosen workloads; the HTTP/2 workloads "
                         "have their own rows: "
                         + ", ".join(c.key for c in CLIENTS if c.suite == "h2"))
    return plan


def missing_modules(clients: list[ClientRow]) -> dict[str, list[str]]:
    """Client key -> modules it needs that this interpreter cannot import."""
    missing: dict[str, list[str]] = {}
    for client in clients:
        absent = [m for m in client.modules if importlib.util.find_spec(m) is None]
        if absent:
            missing[client.key] = absent
    return missing


def _cpus() -> tuple[int | None, int | None, str]:
    """(server CPU, client CPU, description): nginx and clients on different CPUs if possible."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) >= 2 and shutil.which("taskset"):
        return allowed[0], allowed[1], (f"nginx on CPU {allowed[0]}, each client process on "
                                        f"CPU {allowed[1]} (taskset -c)")
    return None, None, "not pinned (needs 2 CPUs and taskset)"


def _worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH_DIR), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


class _Stopped(Exception):
    """The run was interrupted: start no more workers."""


class Progress:
    """The "[n/total]" counter, shared by the lanes of a smoke run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            self.done += 1
            return f"[{self.done:>3}/{self.total}]"


class Runner:
    """Runs jobs against one nginx, one worker process at a time."""

    def __init__(self, plan: Plan, server: Nginx, client_cpu: int | None, logs: Path,
                 progress: Progress) -> None:
        self.plan = plan
        self.server = server
        self.client_cpu = client_cpu
        self.logs = logs
        self.progress = progress
        self.env = _worker_env()
        self.records: list[dict[str, Any]] = []
        self.current: Worker | None = None
        self.error: BaseException | None = None
        self.stopping = False

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "harness.worker"]
        if self.client_cpu is not None:
            cmd = ["taskset", "-c", str(self.client_cpu), *cmd]
        return cmd

    def _start_worker(self, tag: str) -> Worker:
        if self.stopping:
            raise _Stopped
        self.current = Worker(self._command(), self.env, BENCH_DIR, self.logs / f"{tag}.log")
        return self.current

    def _end_worker(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def abort(self) -> None:
        self.stopping = True
        if self.current is not None:
            self.current.kill()
            self.current = None

    # -- jobs ----------------------------------------------------------------------------
    def load_job(self, client: ClientRow, workload: Workload) -> dict[str, Any]:
        urls = [self.server.base_url(workload.server, host) + workload.path
                for host in range(1, workload.hosts + 1)]
        return {
            "kind": "load", "client": client.key, "workload": workload.name, "urls": urls,
            "method": workload.method, "stream": workload.stream,
            "expect_len": EXPECT_LEN[workload.path],
            "concurrency": row_concurrency(client, workload),
            "max_connections": workload.max_connections, "per_host": workload.per_host,
            "hosts": workload.hosts, "requests": self.plan.requests(workload),
            "ca": str(self.server.ca_file), "time_limit": self.plan.time_limit,
            "warmup": self.plan.mode != "smoke",  # smoke runs check function, not speed
            # The protocol the worker must see the library report (None: not checked).
            "protocol": client.protocol if checks_protocol(workload) else None,
            # HTTP/2 workloads: the warm-up starts with one request alone (drivers.py).
            "prime": workload.suite == "h2",
        }

    def idle_runs(self) -> int:
        return min(self.plan.runs, IDLE_RUNS[self.plan.mode])

    def idle_job(self, client: ClientRow) -> dict[str, Any]:
        n = IDLE_CONNECTIONS[self.plan.mode]
        return {
            "kind": "idle-memory", "client": client.key, "workload": IDLE_MEMORY,
            "urls": [self.server.base_url("plain") + "/small"], "connections": n,
            "max_connections": n, "per_host": None, "hosts": 1, "ca": str(self.server.ca_file),
            "status_port": self.server.ports.status, "time_limit": self.plan.time_limit,
        }

    def _ask(self, worker: Worker, job: dict[str, Any], run: int) -> dict[str, Any]:
        # Start-up, a warm-up bounded by the request time-outs, the measured phase, closing.
        timeout = self.plan.time_limit * 3 + 60.0
        check = job.get("protocol")
        log_offset = self.server.protocol_log_size() if check else 0
        resumption = counts_resumption(WORKLOADS_BY_NAME[job["workload"]]) if job[
            "kind"] == "load" else False
        resumption_offset = self.server.resumption_log_size() if resumption else 0
        before = self.server.accepted()
        try:
            answer = worker.ask(job, timeout)
        except WorkerError as exc:
            answer = {"failed": str(exc)}
        after = self.server.accepted()
        # Each stub_status query is itself one accepted connection: `after` counts its own.
        record = {"workload": job["workload"], "client": job["client"], "run": run,
                  "new_connections": after - before - 1, **answer}
        if check:
            self._check_protocol(record, check, log_offset)
        if resumption:
            # nginx's view of the run's TLS handshakes, one per request on this block:
            # {"r": resumed, ".": full}. Wait for as many lines as the client had answers.
            answered = (None if "failed" in record
                        else record["ok"] + record["warmup"]["ok"])
            record["server_resumption"] = self.server.resumption(resumption_offset, answered)
        self.records.append(record)
        return record

    def _check_protocol(self, record: dict[str, Any], expected: str, log_offset: int) -> None:
        """Server side of the protocol check: every request nginx logged for the run must have
        come over the row's protocol. A run that fell back to another one fails."""
        failed = "failed" in record
        # The responses the worker got (warm-up and the protocol probe included) were all
        # logged by nginx: wait for that many lines.
        answered = None if failed else (record["ok"] + record["warmup"]["ok"] + 1)
        counts = self.server.protocols(log_offset, answered)
        record["server_protocols"] = counts
        if failed:
            return
        want = SERVER_PROTOCOL[expected]
        others = {p: n for p, n in counts.items() if p != want}
        logged = sum(counts.values())
        if others or not counts.get(want):
            record["failed"] = (f"protocol check: nginx logged {counts or 'no request'} for "
                                f"this run, expected {expected} ({want}) only")
        elif answered is not None and logged < answered:
            record["failed"] = (f"protocol check: nginx logged only {logged} requests, the "
                                f"client had {answered} answers")

    def run_one(self, job: dict[str, Any], run: int, worker: Worker | None) -> dict[str, Any]:
        if self.stopping:
            raise _Stopped
        own = worker is None
        if worker is None:
            worker = self._start_worker(f"{job['workload']}-{job['client']}-{run}")
        try:
            return self._ask(worker, job, run)
        finally:
            if own:
                self._end_worker()

    # -- the whole plan ------------------------------------------------------------------
    def execute(self, clients: list[ClientRow]) -> None:
        """Every job, interleaved: per workload, round after round, each client once."""
        plan = self.plan
        for workload in plan.workloads:
            for run in range(1, plan.runs + 1):
                for client in clients:
                    if runs_on(client, workload):
                        self._report(self.run_one(self.load_job(client, workload), run, None))
        if plan.idle_memory:
            for run in range(1, self.idle_runs() + 1):
                for client in clients:
                    if client.key in IDLE_CLIENTS:
                        self._report(self.run_one(self.idle_job(client), run, None))

    def execute_batched(self, clients: list[ClientRow]) -> None:
        """Smoke runs: one worker process per client runs all of that client's jobs."""
        plan = self.plan
        try:
            for client in clients:
                worker = self._start_worker(f"batch-{client.key}")
                try:
                    for run in range(1, plan.runs + 1):
                        for workload in plan.workloads:
                            if not runs_on(client, workload):
                                continue
                            self._report(self.run_one(self.load_job(client, workload), run,
                                                      worker))
                        if (plan.idle_memory and client.key in IDLE_CLIENTS
                                and run <= self.idle_runs()):
                            self._report(self.run_one(self.idle_job(client), run, worker))
                finally:
                    self._end_worker()
        except _Stopped:
            pass
        except Exception as exc:  # a lane thread: hand the failure to the main thread
            if not self.stopping:
                self.error = exc

    def _report(self, record: dict[str, Any]) -> None:
        client = CLIENTS_BY_KEY[record["client"]]
        head = (f"{self.progress.next()} {record['workload']:<17} run {record['run']}  "
                f"{client.label:<33}")
        if "failed" in record:
            print(f"{head} FAILED: {record['failed'].splitlines()[0][:200]}", flush=True)
            return
        if record["workload"] == IDLE_MEMORY:
            rss, heap = idle_per_connection(record, "rss"), idle_per_connection(record, "heap")
            text = ("no figure" if rss is None or heap is None else
                    f"{rss / 1024:6.1f} KiB RSS, {heap / 1024:6.1f} KiB heap per idle connection")
            print(f"{head} {text}  ({record['rss_connections']} opened)", flush=True)
            return
        workload = WORKLOADS_BY_NAME[record["workload"]]
        rate = figure(record, workload)
        flag = "  (time limit)" if record.get("timed_out") else ""
        errors = f"  {record['errors']} errors: {record['error_sample']}" if record[
            "errors"] else ""
        proto = f"  {record['info']['protocol']}" if record["info"].get("protocol") else ""
        served = record.get("server_resumption")
        if served is not None:
            proto += f"  {served.get('r', 0)}/{sum(served.values())} resumed"
        print(f"{head} {rate:>11,.1f} {workload.unit}  {record['new_connections']:>5} new conns"
              f"  {record['peak_rss_kib'] / 1024:5.0f} MiB{proto}{flag}{errors}", flush=True)


def figure(record: dict[str, Any], workload: Workload) -> float:
    seconds = record.get("seconds") or 0.0
    if "failed" in record or seconds <= 0:
        return 0.0
    if workload.unit == "MB/s":
        return float(record["bytes"]) / seconds / 1e6
    return float(record["ok"]) / seconds


def idle_per_connection(record: dict[str, Any], how: str) -> float | None:
    """Bytes per idle connection from an idle-memory record; how is "rss" or "heap"."""
    opened = record.get(f"{how}_connections") or 0
    if "failed" in record or opened <= 0:
        return None
    return float(record[f"{how}_growth"]) / opened


# -- summary -----------------------------------------------------------------------------
def summarise(plan: Plan, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per workload and client: median figure, range, ratio to the group's poolhttp row..."""
    out: dict[str, Any] = {}
    for workload in plan.workloads:
        rows: dict[str, Any] = {}
        for client in plan.clients:
            if not runs_on(client, workload):
                continue
            runs = [r for r in records
                    if r["workload"] == workload.name and r["client"] == client.key]
            good = [r for r in runs if "failed" not in r]
            figures = [figure(r, workload) for r in good]
            server_protocols: dict[str, int] = {}
            for r in runs:
                for proto, n in r.get("server_protocols", {}).items():
                    server_protocols[proto] = server_protocols.get(proto, 0) + n
            # nginx's count of the TLS handshakes of the runs that passed, and of those that
            # resumed a session (None: the workload's block does not log it).
            counted = counts_resumption(workload)
            resumed = sum(r.get("server_resumption", {}).get("r", 0) for r in good)
            handshakes = sum(sum(r.get("server_resumption", {}).values()) for r in good)
            rows[client.key] = {
                "label": client.label,
                "group": client.group,
                "concurrency": row_concurrency_label(client, workload),
                "note": row_note(client, workload),
                "median": statistics.median(figures) if figures else None,
                "min": min(figures) if figures else None,
                "max": max(figures) if figures else None,
                "runs": len(runs),
                "failed_runs": len(runs) - len(good),
                "failure": next((r["failed"] for r in runs if "failed" in r), None),
                "errors": sum(r["errors"] for r in good),
                "error_sample": next((r["error_sample"] for r in good if r["errors"]), None),
                "timed_out_runs": sum(bool(r.get("timed_out")) for r in good),
                "requests": statistics.median([r["ok"] for r in good]) if good else None,
                "new_connections": (statistics.median([r["new_connections"] for r in good])
                                    if good else None),
                "peak_rss_mib": (statistics.median([r["peak_rss_kib"] for r in good]) / 1024
                                 if good else None),
                "unavailable": plan.unavailable.get(client.key),
                # The protocol every run was checked to have used (None: not checked), what
                # the library reported, and nginx's count of requests per protocol.
                "protocol": client.protocol if checks_protocol(workload) else None,
                "protocols_seen": sorted({r["info"]["protocol"] for r in good
                                          if r["info"].get("protocol")}),
                "server_protocols": server_protocols,
                "resumed": resumed if counted else None,
                "handshakes": handshakes if counted else None,
                "resumed_fraction": (resumed / handshakes if counted and handshakes else None),
                # What the client says it resumed, where it says (poolhttp's stats()).
                "client_resumed": (sum(r["info"]["tls_resumed"] for r in good)
                                   if counted and good
                                   and all("tls_resumed" in r["info"] for r in good) else None),
            }
        for key, row in rows.items():
            base_key = baseline_key(workload, row["group"])
            base = rows.get(base_key, {}).get("median") if base_key else None
            row["ratio"] = (row["median"] / base
                            if row["median"] is not None and base else None)
            row["baseline"] = key == base_key
        out[workload.name] = rows
    return out


def summarise_idle(plan: Plan, records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for client in plan.clients:
        runs = [r for r in records if r["workload"] == IDLE_MEMORY and r["client"] == client.key]
        if not runs:
            continue
        row: dict[str, Any] = {
            "label": client.label,
            "connections": IDLE_CONNECTIONS[plan.mode],
            "opened": [r.get("rss_connections") for r in runs if "failed" not in r],
            "runs": len(runs),
            "failure": next((r["failed"] for r in runs if "failed" in r), None),
        }
        n = IDLE_CONNECTIONS[plan.mode]
        if any(o is not None and o < 0.9 * (n - 1) for o in row["opened"]):
            row["note"] = (f"opened only {min(row['opened'])} of {n - 1} connections: the "
                           "figure includes the garbage of the requests in flight")
        for how in ("rss", "heap"):
            per = [p for p in (idle_per_connection(r, how) for r in runs) if p is not None]
            row[f"{how}_median"] = statistics.median(per) if per else None
            row[f"{how}_min"] = min(per) if per else None
            row[f"{how}_max"] = max(per) if per else None
        out[client.key] = row
    return out


def problems(summary: dict[str, Any], idle: dict[str, Any]) -> list[str]:
    """Rows without a figure, with errors, or without a connection count."""
    found = []
    for workload, rows in summary.items():
        for key, row in rows.items():
            if row["unavailable"]:
                found.append(f"{workload}/{key}: unavailable: {row['unavailable']}")
            elif row["failed_runs"]:
                found.append(f"{workload}/{key}: failed: {row['failure']}")
            elif not row["median"] or row["median"] <= 0:
                found.append(f"{workload}/{key}: no figure")
            elif row["errors"]:
                found.append(f"{workload}/{key}: {row['errors']} errors: {row['error_sample']}")
            elif row["new_connections"] is None or row["new_connections"] < 1:
                found.append(f"{workload}/{key}: no server-side connection count")
            elif row["handshakes"] is not None and row["handshakes"] < 1:
                found.append(f"{workload}/{key}: nginx logged no TLS handshake (resumption "
                             "count missing)")
    for key, row in idle.items():
        if row["failure"] or row["rss_median"] is None or row["heap_median"] is None:
            found.append(f"{IDLE_MEMORY}/{key}: {row['failure'] or 'no figure'}")
    return found


# -- entry point -------------------------------------------------------------------------
# Rough relative cost of a client's smoke jobs, to balance the two lanes.
_SMOKE_COST = {"httpx-async": 8.0, "requests": 2.0, "niquests": 2.0, "httpx-sync": 2.0,
               "urllib3": 1.5, "niquests-h2": 2.0, "httpx-h2": 1.5}


def _lanes(clients: list[ClientRow], n: int) -> list[list[ClientRow]]:
    """Split clients into n lanes of similar cost, each keeping the catalog's order."""
    lanes: list[list[ClientRow]] = [[] for _ in range(n)]
    cost = [0.0] * n
    for client in sorted(clients, key=lambda c: -_SMOKE_COST.get(c.key, 1.0)):
        i = cost.index(min(cost))
        lanes[i].append(client)
        cost[i] += _SMOKE_COST.get(client.key, 1.0)
    order = {c.key: i for i, c in enumerate(CLIENTS)}
    return [sorted(lane, key=lambda c: order[c.key]) for lane in lanes if lane] or [[]]
def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through the same clean-up as Ctrl-C


def plan_from_results(data: dict[str, Any]) -> Plan:
    """The Plan a saved results file was made with, to render its docs again."""
    facts = data["plan"]
    return Plan(mode=facts["mode"], runs=facts["runs"],
                clients=[CLIENTS_BY_KEY[k] for k in facts["clients"]],
                workloads=[WORKLOADS_BY_NAME[w["name"]] for w in facts["workloads"]],
                idle_memory=facts["idle_connections"] is not None, scale=facts["scale"],
                time_limit=facts["time_limit"], batch=facts["batched_workers"],
                unavailable=dict(facts["unavailable"]))


def render(args: argparse.Namespace) -> int:
    """--render: write the docs from a saved results file, measuring nothing."""
    from . import report

    source = Path(args.render)
    data = json.loads(source.read_text())
    if args.note is not None:
        data["meta"]["note"] = args.note
    docs_dir = Path(args.docs_dir) if args.docs_dir else ROOT / "docs"
    written = report.write_docs(data, plan_from_results(data), docs_dir)
    print(f"bench: wrote {', '.join(_show(p) for p in written)} from {_show(source)}")
    return 0


def main(args: argparse.Namespace) -> int:
    from . import report

    if args.render:
        return render(args)
    plan = make_plan(args)
    for client in plan.clients:
        if sys.version_info < client.min_python:
            need = ".".join(map(str, client.min_python))
            plan.unavailable[client.key] = (f"{client.dists[0]} needs Python >= {need} "
                                            f"(this is {sys.version.split()[0]})")
            print(f"bench: {client.key} left out: {plan.unavailable[client.key]}",
                  file=sys.stderr)
    missing = missing_modules([c for c in plan.clients if c.key not in plan.unavailable])
    if missing:
        lines = [f"  {key}: needs {', '.join(mods)}" for key, mods in missing.items()]
        print("bench: these clients cannot run in this Python environment:\n" + "\n".join(lines)
              + "\n(install bench/requirements.txt, or leave them out with --only)",
              file=sys.stderr)
        return 2
    if any(c.key == "poolhttp-sync" for c in plan.clients):
        import poolhttp

        if not hasattr(poolhttp, "Client"):
            plan.unavailable["poolhttp-sync"] = "poolhttp.Client does not exist in this build"
            print("bench: poolhttp.Client does not exist yet; its rows are left out",
                  file=sys.stderr)
    if plan.batch:
        # Smoke runs check that things work, not how fast: no pinning, and two lanes, each
        # with its own nginx (so connection counts stay per job), share the clients.
        server_cpu, client_cpu, pinning = None, None, "not pinned (smoke run)"
    else:
        server_cpu, client_cpu, pinning = _cpus()
    signal.signal(signal.SIGTERM, _sigterm)
    results_dir = Path(args.results_dir) if args.results_dir else BENCH_DIR / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.time()
    runnable = [c for c in plan.clients if c.key not in plan.unavailable]
    lanes = _lanes(runnable, 2 if plan.batch else 1)
    total = plan.jobs(runnable) * plan.runs
    if plan.idle_memory:
        total += (sum(c.key in IDLE_CLIENTS for c in runnable)
                  * min(plan.runs, IDLE_RUNS[plan.mode]))
    progress = Progress(total)
    runners: list[Runner] = []
    with tempfile.TemporaryDirectory(prefix="poolhttp-bench-") as tmp, ExitStack() as stack:
        tmp_path = Path(tmp)
        # nginx's worker may run as an unprivileged user: it must reach the files below.
        tmp_path.chmod(0o755)
        logs = tmp_path / "logs"
        logs.mkdir()
        for i in range(len(lanes)):
            server_root = tmp_path / f"nginx-{i}"
            server_root.mkdir()
            server = stack.enter_context(Nginx(server_root, server_cpu))
            runners.append(Runner(plan, server, client_cpu, logs, progress))
        print(f"bench: {plan.mode} mode, {total} runs ({len(runnable)} clients, "
              f"{len(plan.workloads)} workloads: {plan.jobs(runnable)} client-workload pairs x "
              f"{plan.runs} run{'s' if plan.runs > 1 else ''}"
              f"{' + idle memory' if plan.idle_memory else ''}); {pinning}", flush=True)
        try:
            if plan.batch:
                threads = [threading.Thread(target=r.execute_batched, args=(lane,), daemon=True)
                           for r, lane in zip(runners, lanes, strict=True)]
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():  # a timed join, so a Ctrl-C gets through at once
                        t.join(0.2)
                for r in runners:
                    if r.error is not None:
                        raise r.error
            else:
                runners[0].execute(lanes[0])
        except KeyboardInterrupt:
            print("\nbench: interrupted; stopping the workers and nginx", file=sys.stderr)
            return 130
        finally:
            for r in runners:
                r.abort()
        nginx_version = report.nginx_version(runners[0].server)
        nginx_pids = [r.server.proc.pid for r in runners if r.server.proc is not None]
    records = [rec for r in runners for rec in r.records]
    summary = summarise(plan, records)
    idle = summarise_idle(plan, records)
    meta = report.environment(plan, pinning, nginx_version)
    meta.update(started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                seconds=round(time.time() - started, 1), nginx_pids=nginx_pids,
                note=args.note)
    data = {"meta": meta, "plan": report.plan_facts(plan), "summary": summary,
            "idle_memory": idle, "runs": records}
    out = results_dir / f"bench-{plan.mode}-{stamp}.json"
    out.write_text(json.dumps(data, indent=1, default=str))
    print(report.console(plan, summary, idle))
    print(f"bench: results saved to {_show(out)}")
    filtered = bool(args.only or args.workload)
    write_docs = (args.write_docs or (plan.mode != "smoke" and not filtered)) and not args.no_docs
    if write_docs:
        docs_dir = Path(args.docs_dir) if args.docs_dir else ROOT / "docs"
        written = report.write_docs(data, plan, docs_dir)
        print("bench: wrote " + ", ".join(_show(p) for p in written))
    found = problems(summary, idle)
    if found:
        print("bench: problems:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    return 0


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)

#!/usr/bin/env python3
"""requests over poolhttp's pool (`PoolAdapter`) vs requests over its own (`HTTPAdapter`): the
same code with only the adapter changed, small GETs against the benchmark's local nginx.

    .venv/bin/python bench/requests_adapter.py                  # 64 threads and 1, 5 repeats
    .venv/bin/python bench/requests_adapter.py --repeats 3 --requests 10000 --requests-c1 2000

nginx is the side-by-side benchmark's (bench/harness/server.py), pinned to one CPU; every
measured run is a fresh Python process pinned to another (`taskset -c`, as bench/run.py pins
its workers), with one `requests.Session` shared by its threads and one adapter mounted for
http:// and https://: `pool_connections=1, pool_maxsize=<threads>, pool_block=True` and the
adapters' default retries for both. Each thread sends one untimed warm-up request, then the
clock runs over its share of `--requests` GETs of nginx's 43-byte `/small`, each checked
(status and body). Runs alternate between the adapters; the medians of the repeats are shown
with the ratio PoolAdapter / HTTPAdapter, and nginx's count of the connections each run opened.
Needs requests and poolhttp importable (the venv of dev.py: `pip install -e .[test]`).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness.catalog import SMALL_BODY  # noqa: E402
from harness.orchestrate import _cpus  # noqa: E402
from harness.procs import parent_death_signal  # noqa: E402
from harness.server import Nginx  # noqa: E402

ADAPTERS = ("HTTPAdapter", "PoolAdapter")
WORKER_TIMEOUT = 600.0  # seconds one measured run may take, at most


# -- one measured run (the child process) -----------------------------------------------------
def make_adapter(name: str, threads: int) -> Any:
    """The one line that differs between the two rows."""
    settings: dict[str, Any] = {"pool_connections": 1, "pool_maxsize": threads,
                                "pool_block": True}
    if name == "PoolAdapter":
        from poolhttp.contrib.requests import PoolAdapter

        return PoolAdapter(**settings)
    from requests.adapters import HTTPAdapter

    return HTTPAdapter(**settings)


def measure(name: str, url: str, threads: int, total: int) -> dict[str, Any]:
    import requests

    session = requests.Session()
    session.trust_env = False  # no proxy or CA bundle of the environment
    adapter = make_adapter(name, threads)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    shares = [total // threads + (1 if index < total % threads else 0)
              for index in range(threads)]
    errors = [0] * threads
    ready = threading.Barrier(threads + 1)

    def get() -> bool:
        try:
            response = session.get(url)
        except requests.RequestException:
            return False
        return response.status_code == 200 and response.content == SMALL_BODY

    def work(index: int) -> None:
        if not get():  # the warm-up: opens this thread's connection
            errors[index] += 1
        ready.wait()
        for _ in range(shares[index]):
            if not get():
                errors[index] += 1

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    session.close()
    return {"rate": total / elapsed, "elapsed": elapsed, "errors": sum(errors)}


# -- the runs (the parent process) -------------------------------------------------------------
def run_once(name: str, url: str, threads: int, total: int, cpu: int | None,
             server: Nginx) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, url,
           str(threads), str(total)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    before = server.accepted()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT,
                          preexec_fn=parent_death_signal(signal.SIGKILL), check=False)
    after = server.accepted()
    if done.returncode != 0:
        raise RuntimeError(f"the {name} run failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["new_connections"] = after - before - 1  # less the status query's own
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000,
                        help="GETs per run with 64 threads (default 20000)")
    parser.add_argument("--requests-c1", type=int, default=5_000,
                        help="GETs per run with 1 thread (default 5000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per row (default 5)")
    parser.add_argument("--worker", nargs=4, metavar=("ADAPTER", "URL", "THREADS", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, url, threads, total = args.worker
        print(json.dumps(measure(name, url, int(threads), int(total))), flush=True)
        return

    server_cpu, client_cpu, pinning = _cpus()
    workloads = (("get-c64", 64, args.requests), ("get-c1", 1, args.requests_c1))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="poolhttp-bench-") as directory, \
            Nginx(Path(directory), server_cpu) as server:
        url = server.base_url("plain") + "/small"
        print(f"nginx {server.version}; {pinning}; {args.repeats} repeats; "
              f"python {sys.version.split()[0]}", flush=True)
        for workload, threads, total in workloads:
            for repeat in range(args.repeats):
                order = ADAPTERS if repeat % 2 == 0 else ADAPTERS[::-1]
                for name in order:
                    result = run_once(name, url, threads, total, client_cpu, server)
                    results.setdefault((workload, name), []).append(result)
                    print(f"  {workload} {name:<12} run {repeat + 1}: "
                          f"{result['rate']:>8,.0f} req/s, {result['errors']} errors, "
                          f"{result['new_connections']} new connections", flush=True)

    import requests

    import poolhttp

    print(f"\nrequests {requests.__version__}, poolhttp {poolhttp.__version__}: median req/s "
          f"of {args.repeats} runs (slowest-fastest); new connections per run (nginx)\n")
    print("| Workload | Threads | HTTPAdapter | PoolAdapter | PoolAdapter / HTTPAdapter | "
          "New conns (HTTP / Pool) | Errors |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workload, threads, _total in workloads:
        cells = []
        medians = {}
        conns = []
        errors = 0
        for name in ADAPTERS:
            runs = results[(workload, name)]
            rates = [run["rate"] for run in runs]
            medians[name] = statistics.median(rates)
            cells.append(f"{medians[name]:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})")
            conns.append(f"{statistics.median(run['new_connections'] for run in runs):g}")
            errors += sum(run["errors"] for run in runs)
        ratio = medians["PoolAdapter"] / medians["HTTPAdapter"]
        print(f"| {workload} | {threads} | {cells[0]} | {cells[1]} | {ratio:.2f}x | "
              f"{' / '.join(conns)} | {errors} |")


if __name__ == "__main__":
    main()

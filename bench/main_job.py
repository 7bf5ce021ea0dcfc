#!/usr/bin/env python3
"""The main job side by side: `poolhttp fetch` against `curl --parallel` and an aiohttp script.

    python bench/main_job.py                         # 100,000 URLs, 1 and 1,000 origins, 3 runs
    python bench/main_job.py --requests 20000 --repeat 1 --origins 1000

The server is one nginx worker pinned to CPU 0, answering every request with a 3-byte body;
for the many-origins list it listens on 1,000 loopback ports (one origin each), and the URLs
visit the origins in turn (URL i goes to origin i mod 1,000), the order that defeats a pool
whose idle connections are fewer than the origins. Each client runs pinned to CPU 1:

- `poolhttp`: `poolhttp fetch LIST --db FILE -c 64 --per-host 8 --progress none` (uvloop when
  installed), every result stored in SQLite; its stored row count is checked.
- `curl`:     `curl --parallel --parallel-max 64 -K LIST.curl`, bodies to /dev/null, storing
  nothing: the reference a user already has.
- `aiohttp`:  a straightforward script (bench/main_job_aiohttp.py): 64 tasks, one
  `TCPConnector(limit=64, limit_per_host=8)`, results into SQLite in batches of 1,000. It runs
  in whichever Python has aiohttp: this one, or `--aiohttp-python`.

Reported per list: the median requests/s of the runs (runs interleaved), the ratio to curl in
the same run, peak RSS of the process (wait4's ru_maxrss), and the connections nginx accepted
(its stub_status, so the server's count, not the client's), from which reuse = 1 - accepted /
requests. Needs nginx, curl and the poolhttp venv (`python3 dev.py test` builds one).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ("poolhttp", "curl", "aiohttp")


@dataclass
class Outcome:
    seconds: float
    rss_mb: float
    accepted: int
    stored: int | None = None


# -- the server -------------------------------------------------------------------------------
def _free_base(count: int) -> int:
    """A base port such that base .. base+count-1 are free on 127.0.0.1 (checked by binding)."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"no run of {count} free ports found")


class Server:
    """nginx with one origin per port: `count` origins, plus a stub_status port."""

    def __init__(self, root: Path, origins: int, cpu: int | None) -> None:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if nginx is None:
            raise SystemExit("nginx not found (Debian: apt-get install nginx-light)")
        self.root = root
        base = _free_base(origins + 1)
        self.status_port = base + origins
        self.origins = [f"http://127.0.0.1:{p}" for p in range(base, base + origins)]
        listens = "\n".join(f"        listen 127.0.0.1:{p} backlog=4096;"
                            for p in range(base, base + origins))
        (root / "nginx.conf").write_text(f"""
worker_processes 1;
worker_rlimit_nofile 16384;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
{listens}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{self.status_port};
        location / {{ stub_status; }}
    }}
}}
""")
        (root / "tmp").mkdir(exist_ok=True)
        command = [nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.accepted()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise SystemExit(f"nginx did not start: {err}") from None
                time.sleep(0.05)

    def accepted(self) -> int:
        """Connections nginx has accepted so far, less the one this query opens."""
        url = f"http://127.0.0.1:{self.status_port}/"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        return int(text.splitlines()[2].split()[0]) - 1

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the clients ------------------------------------------------------------------------------
def write_lists(directory: Path, origins: list[str], count: int) -> tuple[Path, Path]:
    plain = directory / f"urls-{len(origins)}.txt"
    curl = directory / f"urls-{len(origins)}.curl"
    with plain.open("w") as lines, curl.open("w") as config:
        for i in range(count):
            url = f"{origins[i % len(origins)]}/item/{i}"
            lines.write(url + "\n")
            config.write(f'url = "{url}"\noutput = "/dev/null"\n')
    return plain, curl


def timed(command: list[str], server: Server, cpu: int | None, env: dict[str, str] | None = None
          ) -> Outcome:
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    before = server.accepted()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {err.decode()[-2000:]}")
    # `accepted()` leaves out the query's own connection, not the one the query before made.
    return Outcome(seconds, usage.ru_maxrss / 1024, server.accepted() - before - 1)


def per_host(args: argparse.Namespace, server: Server) -> int:
    return args.concurrency if len(server.origins) == 1 else args.per_host


def run_poolhttp(args: argparse.Namespace, lst: Path, db: Path, server: Server) -> Outcome:
    db.unlink(missing_ok=True)
    command = [sys.executable, "-m", "poolhttp", "fetch", str(lst), "--db", str(db),
               "-c", str(args.concurrency), "--per-host", str(per_host(args, server)),
               "--progress", "none"]
    outcome = timed(command, server, args.client_cpu)
    with sqlite3.connect(db) as conn:
        outcome.stored = conn.execute("SELECT count(*) FROM fetches WHERE status = 200"
                                      ).fetchone()[0]
    return outcome


def run_curl(args: argparse.Namespace, config: Path, server: Server) -> Outcome:
    command = ["curl", "--silent", "--parallel", "--parallel-max", str(args.concurrency),
               "-K", str(config)]
    return timed(command, server, args.client_cpu)


def run_aiohttp(args: argparse.Namespace, lst: Path, db: Path, server: Server) -> Outcome:
    db.unlink(missing_ok=True)
    command = [args.aiohttp_python, str(HERE / "main_job_aiohttp.py"), str(lst), str(db),
               str(args.concurrency), str(per_host(args, server))]
    outcome = timed(command, server, args.client_cpu)
    with sqlite3.connect(db) as conn:
        outcome.stored = conn.execute("SELECT count(*) FROM results WHERE status = 200"
                                      ).fetchone()[0]
    return outcome


def has_aiohttp(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import aiohttp"], capture_output=True)
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--origins", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-host", type=int, default=8,
                        help="per-origin cap of poolhttp and aiohttp on the many-origins lists "
                        "(a one-origin list gets --concurrency, as curl has no such cap)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--aiohttp-python", default=sys.executable,
                        help="a Python with aiohttp (default: this one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not shutil.which("taskset"):
        args.server_cpu = args.client_cpu = None
    variants = list(args.only)
    if "aiohttp" in variants and not has_aiohttp(args.aiohttp_python):
        raise SystemExit(f"{args.aiohttp_python} has no aiohttp: pip install aiohttp, or pass "
                         "--aiohttp-python, or --only poolhttp curl")
    figures: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="main-job-") as tmp:
        root = Path(tmp)
        for count in args.origins:
            server_dir = root / f"nginx-{count}"
            server_dir.mkdir()
            server = Server(server_dir, count, args.server_cpu)
            try:
                lst, curl_config = write_lists(root, server.origins, args.requests)
                runs: dict[str, list[Outcome]] = {v: [] for v in variants}
                for _ in range(args.repeat):
                    for variant in variants:
                        if variant == "poolhttp":
                            out = run_poolhttp(args, lst, root / "poolhttp.sqlite", server)
                        elif variant == "curl":
                            out = run_curl(args, curl_config, server)
                        else:
                            out = run_aiohttp(args, lst, root / "aiohttp.sqlite", server)
                        if out.stored is not None and out.stored != args.requests:
                            raise SystemExit(f"{variant}: {out.stored} of {args.requests} "
                                             "results stored with status 200")
                        runs[variant].append(out)
            finally:
                server.stop()
            figures[f"{count} origins"] = report(args, count, runs)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def report(args: argparse.Namespace, origins: int, runs: dict[str, list[Outcome]]
           ) -> dict[str, object]:
    rates = {v: statistics.median(args.requests / o.seconds for o in outs)
             for v, outs in runs.items()}
    print(f"\n{args.requests:,} URLs over {origins:,} origin(s), {args.concurrency} in flight, "
          f"{args.repeat} run(s), medians")
    print(f"  {'client':<10} {'req/s':>9} {'vs curl':>8} {'peak RSS':>9} "
          f"{'accepted':>9} {'reuse':>7}")
    rows: dict[str, object] = {}
    for variant, outs in runs.items():
        rss = statistics.median(o.rss_mb for o in outs)
        accepted = int(statistics.median(o.accepted for o in outs))
        reuse = 1 - accepted / args.requests
        ratio = rates[variant] / rates["curl"] if "curl" in rates else float("nan")
        print(f"  {variant:<10} {rates[variant]:>9,.0f} {ratio:>7.2f}x {rss:>7.1f}MB "
              f"{accepted:>9,} {reuse:>6.1%}")
        rows[variant] = {"req_s": round(rates[variant]), "vs_curl": round(ratio, 3),
                         "rss_mb": round(rss, 1), "accepted": accepted,
                         "runs_req_s": [round(args.requests / o.seconds) for o in outs]}
    return rows


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`fetch_distributed` on 1 and on 2 local worker processes, against latency-bound origins.

    python bench/distributed.py                        # 1,000 origins, 20 ms each, 40,000 URLs
    python bench/distributed.py --requests 100000 --delay 0.05 --workers 1 2

The servers run in their own process (four `poolhttp.cli._server.LocalServer`s of 250 loopback
addresses each, on one event loop), so the workers and the driver compete with them for the
machine's cores as a real run's would not: on a 2-core machine the figures are a floor. Each
variant reports requests/s, what the workers' tasks spent (busy seconds over all workers,
i.e. the time inside chunks), the driver's CPU seconds, and as a baseline `fetch_many` in one
process with the same total concurrency. Needs the dask extra (pip install 'poolhttp[dask]').
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

# This file's name is the package's: keep its directory off the path, or `import distributed`
# would import this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

_HOSTS_PER_SERVER = 250


def serve(origins: int, pipe: Connection) -> None:
    from poolhttp.cli._server import LocalServer

    async def main() -> None:
        servers = [LocalServer(min(_HOSTS_PER_SERVER, origins - i))
                   for i in range(0, origins, _HOSTS_PER_SERVER)]
        for server in servers:
            await server.start()
        pipe.send([o for server in servers for o in server.origins])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, pipe.recv)  # until the parent says stop
        pipe.send(sum(s.stats.connections for s in servers))
        for server in servers:
            await server.aclose()

    asyncio.run(main())


def url_list(origins: list[str], count: int, delay: float) -> list[str]:
    return [f"{origins[i % len(origins)]}/b/{i}?delay={delay}" for i in range(count)]


def run_distributed(urls: list[str], workers: int, threads: int, concurrency: int,
                    per_host: int, chunk: int) -> dict[str, Any]:
    import distributed

    from poolhttp.bulk import fetch_distributed

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=threads,
                                  processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        client.run(lambda: None)  # workers up before the clock starts
        cpu0, t0 = time.process_time(), time.monotonic()
        with fetch_distributed(urls, client=client, concurrency=concurrency,
                               per_host=per_host, chunk_size=chunk, keep_bodies=False) as run:
            ok = sum(1 for r in run if r.ok)
        seconds = time.monotonic() - t0
        driver_cpu = time.process_time() - cpu0
        busy = sum(f.busy for f in run.workers.values())
        worker_cpu = client.run(lambda: time.process_time())
        worker_rss = client.run(peak_mb)
    return {"variant": f"dask x{workers}", "ok": ok, "seconds": seconds,
            "rps": len(urls) / seconds, "driver_cpu": driver_cpu,
            "task_busy": busy, "worker_cpu": sum(worker_cpu.values()),
            "chunks": run.chunks, "worker_rss": max(worker_rss.values())}


def run_local(urls: list[str], concurrency: int, per_host: int) -> dict[str, Any]:
    import poolhttp

    async def main() -> int:
        limits = poolhttp.Limits(max_connections=concurrency,
                                 max_connections_per_host=per_host)
        async with poolhttp.AsyncClient(limits=limits) as client:
            ok = 0
            async for r in poolhttp.fetch_many(client, urls, concurrency=concurrency,
                                               per_host=per_host, keep_bodies=False):
                ok += r.ok
            return ok

    cpu0, t0 = time.process_time(), time.monotonic()
    ok = asyncio.run(main())
    seconds = time.monotonic() - t0
    return {"variant": f"fetch_many c={concurrency}", "ok": ok, "seconds": seconds,
            "rps": len(urls) / seconds, "driver_cpu": time.process_time() - cpu0,
            "task_busy": seconds, "worker_cpu": 0.0, "chunks": 0, "worker_rss": 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--origins", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2, help="tasks per worker at once")
    parser.add_argument("--concurrency", type=int, default=64, help="per task")
    parser.add_argument("--per-host", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=500)
    args = parser.parse_args()

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    server = ctx.Process(target=serve, args=(args.origins, there), daemon=True)
    server.start()
    origins = here.recv()
    urls = url_list(origins, args.requests, args.delay)
    print(f"{len(urls):,} URLs over {len(origins):,} origins answering after "
          f"{args.delay * 1000:.0f} ms; {os.cpu_count()} cores; per task concurrency "
          f"{args.concurrency}, {args.threads} tasks per worker, chunks of {args.chunk}")
    rows = [run_local(urls, args.concurrency * args.threads, args.per_host)]
    for n in args.workers:
        rows.append(run_distributed(urls, n, args.threads, args.concurrency, args.per_host,
                                    args.chunk))
    here.send("stop")
    connections = here.recv()
    server.join(10)
    print(f"{'variant':<22}{'req/s':>9}{'seconds':>9}{'driver cpu':>12}{'task busy':>11}"
          f"{'worker cpu':>12}{'chunks':>8}{'worker RSS':>12}")
    for row in rows:
        print(f"{row['variant']:<22}{row['rps']:>9,.0f}{row['seconds']:>9.2f}"
              f"{row['driver_cpu']:>12.2f}{row['task_busy']:>11.2f}{row['worker_cpu']:>12.2f}"
              f"{row['chunks']:>8}{row['worker_rss']:>9.0f} MB")
    ideal = args.concurrency * args.threads / args.delay
    print(f"latency bound per worker: {ideal:,.0f} req/s ({args.concurrency * args.threads} "
          f"in flight / {args.delay * 1000:.0f} ms); server connections accepted: "
          f"{connections:,}; driver peak RSS {peak_mb():.0f} MB")
    return 0


def peak_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""The bulk fetcher at scale: one million URLs against a local server, peak memory and speed.

    python bench/bulk_scale.py                          # 1,000,000 URLs, all three variants
    python bench/bulk_scale.py --requests 50000 --repeat 2

Variants, each in its own child process (so peak RSS is its own), against the same local
server process (`poolhttp.cli._server`, one origin per loopback address):

- `bare`:    an AsyncClient and `concurrency` coroutines pulling URLs from one generator, each
             awaiting `client.get(url)` and hashing the body: the least a program can do.
- `fetcher`: `poolhttp.fetch_many` over the same generator, same concurrency, the consumer only
             counting results (each carries status, headers, body, size, sha256, timings).
- `cli`:     `poolhttp fetch` on a file of the same URLs, writing every result to SQLite.

Reported: requests/s and peak RSS (getrusage ru_maxrss) of each, and fetcher/bare throughput.
With `--repeat N` the variants run interleaved N times and the best run of each is reported,
which damps the noise of a shared machine. Needs poolhttp importable (the venv of dev.py).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

VARIANTS = ("bare", "fetcher", "cli")


def urls(origins: list[str], count: int) -> Iterator[str]:
    for i in range(count):
        yield f"{origins[i % len(origins)]}/item/{i}"


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / (1024 * 1024)  # bytes on macOS


# -- the variants (run in a child process) ----------------------------------------------------
async def run_bare(origins: list[str], count: int, concurrency: int) -> int:
    import poolhttp

    limits = poolhttp.Limits(max_connections=concurrency)
    source = urls(origins, count)
    errors = 0
    async with poolhttp.AsyncClient(limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for url in source:  # shared: each URL is taken by exactly one worker
                try:
                    response = await client.get(url)
                    hashlib.sha256(response.content).hexdigest()
                except poolhttp.HTTPError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def run_fetcher(origins: list[str], count: int, concurrency: int) -> int:
    import poolhttp
    from poolhttp.bulk import fetch_many

    limits = poolhttp.Limits(max_connections=concurrency)
    errors = 0
    async with poolhttp.AsyncClient(limits=limits) as client:
        async for result in fetch_many(client, urls(origins, count),
                                       concurrency=concurrency, per_host=concurrency):
            if not result.ok:
                errors += 1
    return errors


def run_cli(origins: list[str], count: int, concurrency: int, workdir: Path) -> int:
    url_file = workdir / "urls.txt"
    if not url_file.exists():
        with open(url_file, "w") as f:
            f.writelines(url + "\n" for url in urls(origins, count))
    db = workdir / f"results-{time.monotonic_ns()}.sqlite"
    cmd = [sys.executable, "-m", "poolhttp", "fetch", str(url_file), "--db", str(db),
           "--progress", "none", "-c", str(concurrency), "--per-host", str(concurrency)]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"poolhttp fetch failed ({done.returncode}): {done.stderr[-2000:]!r}")
    return 0


def child(args: argparse.Namespace) -> None:
    """Run one variant and print one JSON line about it."""
    origins = json.loads(args.origins)
    started = time.perf_counter()
    if args.variant == "cli":
        errors = run_cli(origins, args.requests, args.concurrency, Path(args.workdir))
        rss = peak_rss_mb(resource.RUSAGE_CHILDREN)  # the fetch process, our only child
    else:
        runner = run_bare if args.variant == "bare" else run_fetcher
        main = runner(origins, args.requests, args.concurrency)
        if args.loop == "uvloop":
            import uvloop

            errors = uvloop.run(main)
        else:
            errors = asyncio.run(main)
        rss = peak_rss_mb()
    seconds = time.perf_counter() - started
    print(json.dumps({"variant": args.variant, "requests": args.requests, "errors": errors,
                      "seconds": round(seconds, 2), "rps": round(args.requests / seconds),
                      "peak_rss_mb": round(rss, 1)}), flush=True)


# -- the parent ----------------------------------------------------------------------------------
def start_server(hosts: int, loop: str) -> tuple[subprocess.Popen[bytes], list[str]]:
    cmd = [sys.executable, "-m", "poolhttp.cli._server", "--hosts", str(hosts), "--loop", loop]
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.stdout is not None
    origins: list[str] = json.loads(server.stdout.readline())["origins"]
    return server, origins


def run_variant(args: argparse.Namespace, variant: str, origins: list[str],
                workdir: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--variant", variant, "--origins",
           json.dumps(origins), "--requests", str(args.requests), "--concurrency",
           str(args.concurrency), "--loop", args.loop, "--workdir", workdir]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, env=os.environ).stdout
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    print(f"  {variant:8} {result['rps']:>8,.0f} req/s  {result['seconds']:>8.1f} s  "
          f"peak RSS {result['peak_rss_mb']:>6.1f} MB  errors {result['errors']:,.0f}",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--hosts", type=int, default=4, help="local origins")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--origins", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    variants = [v for v in args.variants.split(",") if v]
    best: dict[str, dict[str, float]] = {}
    server, origins = start_server(args.hosts, args.loop)
    print(f"bulk_scale: {args.requests:,} URLs over {len(origins)} origins, concurrency "
          f"{args.concurrency}, {args.loop}, {os.cpu_count()} CPUs", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="poolhttp-bulk-scale-") as workdir:
            for round_ in range(args.repeat):
                print(f"round {round_ + 1}/{args.repeat}", flush=True)
                for variant in variants:
                    result = run_variant(args, variant, origins, workdir)
                    if variant not in best or result["rps"] > best[variant]["rps"]:
                        best[variant] = result
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    if "bare" in best and "fetcher" in best:
        ratio = best["fetcher"]["rps"] / best["bare"]["rps"]
        print(f"fetcher / bare throughput: {ratio:.2f} (best of {args.repeat})")
    print(json.dumps({"best": best}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""httpx.AsyncClient on its own transport vs on poolhttp's (`AsyncPoolTransport`): the same
code, against one local nginx (the test suite's, from tests/support).

    .venv/bin/python bench/httpx_transport.py                 # GETs, 64 at a time, 3 rounds
    .venv/bin/python bench/httpx_transport.py --requests 20000 --concurrency 16 --loop uvloop

Each round makes a new client, warms it with one request per connection, then times
`--requests` GETs of nginx's 6-byte "/" answered with keep-alive; the best round is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.certs import make_certs
from tests.support.nginx import Nginx

import poolhttp
from poolhttp.contrib.httpx import AsyncPoolTransport


def httpx_default(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits)


def httpx_over_poolhttp(concurrency: int) -> httpx.AsyncClient:
    limits = poolhttp.Limits(max_connections=concurrency)
    return httpx.AsyncClient(transport=AsyncPoolTransport(limits=limits))


async def one_round(make: Callable[[int], httpx.AsyncClient], url: str, requests: int,
                    concurrency: int) -> float:
    async with make(concurrency) as client:
        await asyncio.gather(*[client.get(url) for _ in range(concurrency)])  # warm up
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.get(url)
                assert response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, Nginx(
            certs=make_certs(Path(directory) / "certs")) as nginx:
        url = nginx.url("/")
        for name, make in (("httpx (its own transport)", httpx_default),
                           ("httpx + AsyncPoolTransport", httpx_over_poolhttp)):
            rates = []
            for _ in range(args.rounds):
                if args.loop == "uvloop":
                    import uvloop

                    rate = uvloop.run(one_round(make, url, args.requests, args.concurrency))
                else:
                    rate = asyncio.run(one_round(make, url, args.requests, args.concurrency))
                rates.append(rate)
            print(f"{name:28} {args.loop:8} c={args.concurrency:<4} "
                  f"{max(rates):8.0f} requests/s (rounds: "
                  f"{', '.join(f'{r:.0f}' for r in rates)})", flush=True)


if __name__ == "__main__":
    main()

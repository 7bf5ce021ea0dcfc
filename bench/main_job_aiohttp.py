#!/usr/bin/env python3
"""The aiohttp reference of bench/main_job.py: what a user would write by hand.

    python bench/main_job_aiohttp.py URLS DB CONCURRENCY PER_HOST

`CONCURRENCY` tasks share one ClientSession (TCPConnector limit and limit_per_host), each
takes the next line of the list, fetches it, hashes the body, and queues a row; rows go to
SQLite in transactions of 1,000. uvloop when installed, as `poolhttp fetch` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import time


async def main(path: str, db: str, concurrency: int, per_host: int) -> None:
    import aiohttp

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE results (line INTEGER PRIMARY KEY, url TEXT, status INTEGER,"
                 " size INTEGER, sha256 TEXT, error TEXT, elapsed REAL)")
    rows: list[tuple[object, ...]] = []

    def flush() -> None:
        with conn:
            conn.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?)", rows)
        rows.clear()

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_host)
    # The list is read lazily, a line at a time, as a user's script would.
    with open(path, encoding="utf-8") as file:  # noqa: ASYNC230
        lines = enumerate(file)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for number, line in lines:
                    url = line.strip()
                    started = time.perf_counter()
                    try:
                        async with session.get(url) as response:
                            body = await response.read()
                        rows.append((number, url, response.status, len(body),
                                     hashlib.sha256(body).hexdigest(), None,
                                     time.perf_counter() - started))
                    except Exception as exc:  # a failure is a row too
                        rows.append((number, url, None, None, None, repr(exc),
                                     time.perf_counter() - started))
                    if len(rows) >= 1000:
                        flush()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    flush()
    conn.close()


if __name__ == "__main__":
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))

"""`poolhttp fetch` keeps its connections: a run over a few origins must not churn them, nor a
run over more origins than the pool has connections.

With `-c 10 --per-host 8` over 3 origins the per-host limits add up to more than the pool's
total (3 x 8 > 10), so the pool is always full and some origin always waits. Serving it by
closing another origin's connection and opening a new one for every request would keep the
run within its limits and still cost a connect (and a TIME_WAIT port) per request. Counted
from the servers' side: whatever the pool does, the servers see each connection it opens.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from poolhttp import Client, Limits, fetch_many_sync
from poolhttp.cli import main
from poolhttp.cli._fetch import Plan, client_options

from .helpers import ThreadedServer, query, write_lines

ORIGINS = 3
URLS = 3_000
CONCURRENCY = 10
PER_HOST = 8


def test_fetch_over_three_origins_reuses_its_connections(
        loop_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pool the command really builds (client_options: -c is max_connections, --per-host
    # max_connections_per_host), rather than what the flags are assumed to mean.
    limits: list[Limits] = []

    def recording_client_options(plan: Plan) -> dict[str, Any]:
        options = client_options(plan)
        limits.append(options["limits"])
        return options

    monkeypatch.setattr("poolhttp.cli._drive.client_options", recording_client_options)
    db = tmp_path / "churn.sqlite"
    with ThreadedServer(hosts=ORIGINS) as server:
        assert len(set(server.origins)) == ORIGINS
        urls = [f"{server.origins[i % ORIGINS]}/{i}" for i in range(URLS)]  # round robin
        status = main(["fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--db", str(db),
                       "-c", str(CONCURRENCY), "--per-host", str(PER_HOST),
                       "--progress", "none", "--loop", loop_kind])
    stats = server.stats  # complete now that the servers have stopped

    assert status == 0
    assert len(limits) == 1
    max_connections = limits[0].max_connections
    assert max_connections == CONCURRENCY
    assert limits[0].max_connections_per_host == PER_HOST

    rows = query(db, "SELECT url, status, error_type, error FROM results")
    assert sorted(row[0] for row in rows) == sorted(urls)  # one row per URL, none twice
    failures = Counter((row[1], row[2], row[3]) for row in rows if row[1] != 200)
    assert not failures, f"not every URL got a 200: {failures.most_common(5)}"

    bound = 2 * max_connections
    assert stats.connections <= bound, (
        f"the {ORIGINS} servers accepted {stats.connections} connections for {URLS:,} "
        f"requests ({stats.requests:,} seen), with max_connections={max_connections} and "
        f"max_connections_per_host={PER_HOST}: at most {bound} expected. The pool closes "
        "connections and opens new ones instead of reusing what it has open "
        f"({URLS / stats.connections:.1f} requests per connection)")


MANY_ORIGINS = 60
MANY_URLS = 6_000


def test_fetch_over_more_origins_than_connections_reuses_them(
        loop_kind: str, tmp_path: Path) -> None:
    # The list visits 60 origins in turn through a pool of 10 connections: taken in input
    # order, each origin's next URL comes 60 requests later, long after its idle connection
    # was closed to open one elsewhere, so every request would pay a connect (6,000 for
    # 6,000). The window reads ahead and lets a freed slot go on with its origin's parked
    # URLs, so each connection carries a run of requests instead.
    db = tmp_path / "many.sqlite"
    with ThreadedServer(hosts=MANY_ORIGINS) as server:
        assert len(set(server.origins)) == MANY_ORIGINS
        urls = [f"{server.origins[i % MANY_ORIGINS]}/{i}" for i in range(MANY_URLS)]
        status = main(["fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--db", str(db),
                       "-c", str(CONCURRENCY), "--per-host", "2", "--progress", "none",
                       "--loop", loop_kind])
    stats = server.stats

    assert status == 0
    rows = query(db, "SELECT url, status FROM results")
    assert sorted(row[0] for row in rows) == sorted(urls)
    assert {row[1] for row in rows} == {200}
    assert stats.requests == MANY_URLS
    bound = MANY_URLS // 10
    assert stats.connections <= bound, (
        f"the {MANY_ORIGINS} servers accepted {stats.connections} connections for "
        f"{MANY_URLS:,} requests through a pool of {CONCURRENCY}: at most {bound} expected "
        f"(90% reuse); {MANY_URLS / stats.connections:.1f} requests per connection")


def test_fetch_many_sync_over_more_origins_than_connections_reuses_them() -> None:
    # The same rule in the threaded driver, through the API.
    with ThreadedServer(hosts=MANY_ORIGINS) as server:
        urls = [f"{server.origins[i % MANY_ORIGINS]}/{i}" for i in range(MANY_URLS // 2)]
        with Client(limits=Limits(max_connections=CONCURRENCY)) as client, \
                fetch_many_sync(client, urls, per_host=2, keep_bodies=False) as results:
            statuses = Counter(result.status for result in results)
    stats = server.stats

    assert statuses == {200: len(urls)}
    assert stats.requests == len(urls)
    bound = len(urls) // 10
    assert stats.connections <= bound, (
        f"{stats.connections} connections accepted for {len(urls):,} requests over "
        f"{MANY_ORIGINS} origins through a pool of {CONCURRENCY}: at most {bound} expected")

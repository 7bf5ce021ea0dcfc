"""`fetch_distributed` and `poolhttp fetch --engine dask` on a local cluster of two worker
processes, against local servers (loopback only): every line stored once, per-host limits and
--rate held across workers (seen by the servers), a worker killed mid-run, the driver killed
and resumed."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed as _distributed  # a test dependency: missing, these tests fail, not skip
import pytest

from poolhttp.bulk import fetch_distributed
from poolhttp.bulk._distributed import partition_of, require_distributed

from .helpers import ThreadedServer, cli_env, query, run_cli, write_lines

distributed: Any = _distributed  # partly untyped

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return int(query(db, "SELECT count(*) FROM fetches")[0][0])
    except Exception:
        return 0


def start_fetch(urls: Path, db: Path, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "poolhttp", "fetch", str(urls), "--db",
                             str(db), "--progress", "none", *flags], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_rows(db: Path, proc: subprocess.Popen[bytes], wanted: int) -> None:
    deadline = time.monotonic() + 60
    while stored(db) < wanted:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def check_once(db: Path, lines: int) -> None:
    rows = query(db, "SELECT count(*), count(DISTINCT line), min(line), max(line), "
                     "count(status) FROM fetches")
    assert rows == [(lines, lines, 1, lines, lines)]


def test_partition_is_stable() -> None:
    assert partition_of("http://a.example:80", 64) == partition_of("http://a.example:80", 64)
    spread = {partition_of(f"http://h{i}.example:80", 8) for i in range(100)}
    assert spread == set(range(8))


def test_nothing_imports_distributed_unless_used() -> None:
    code = ("import sys, poolhttp, poolhttp.bulk, poolhttp.cli, poolhttp.cli._cluster; "
            "sys.exit('distributed' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env=cli_env()).returncode == 0


def test_missing_distributed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'poolhttp\[dask\]'"):
        require_distributed()
    with pytest.raises(ImportError, match="poolhttp"):
        fetch_distributed(["http://127.0.0.1:1/"])


def test_cli_without_distributed_says_how_to_install(tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "u.txt", ["http://127.0.0.1:1/"])
    db = tmp_path / "r.sqlite"
    code = ("import sys; sys.modules['distributed'] = None; from poolhttp.cli import main; "
            f"sys.exit(main(['fetch', {str(urls)!r}, '--db', {str(db)!r}, '--engine', 'dask']))")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "pip install 'poolhttp[dask]'" in done.stderr
    assert not db.exists()  # refused before anything was opened


def test_cluster_flags_need_the_engine(tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "u.txt", ["http://127.0.0.1:1/"])
    done = run_cli(["fetch", str(urls), "--db", str(tmp_path / "r.sqlite"), "--workers", "2"])
    assert done.returncode == 2
    assert "--engine dask" in done.stderr
    assert not (tmp_path / "r.sqlite").exists()


def test_api_results_like_fetch_many(dask_client: Any) -> None:
    with ThreadedServer(3) as server:
        urls = [f"{server.origins[i % 3]}/a/{i}" for i in range(600)] + ["nope", 7]
        with fetch_distributed(urls, client=dask_client, chunk_size=50,  # type: ignore[arg-type]
                               per_host=2) as run:
            results = list(run)
    assert sorted(r.key for r in results) == list(range(602))
    by_key = {r.key: r for r in results}
    assert by_key[5].status == 200
    assert by_key[5].url == f"{server.origins[2]}/a/5"
    assert by_key[5].headers is not None
    assert by_key[5].sha256 is not None
    assert by_key[600].error_type is not None
    assert by_key[601].error_type is not None
    assert sum(f.results for f in run.workers.values()) == 600


def test_cli_20000_lines_per_host_held_across_workers(tmp_path: Path, dask_client: Any) -> None:
    with ThreadedServer(16) as server:
        urls = [f"{server.origins[i % 16]}/p/{i}?delay=0.003" for i in range(20_000)]
        path = write_lines(tmp_path / "urls.txt", urls)
        db = tmp_path / "r.sqlite"
        done = run_cli(["fetch", str(path), "--db", str(db), "--engine", "dask",
                        "--scheduler", dask_client.scheduler.address, "--per-host", "3",
                        "--progress", "plain", "--progress-interval", "1"], timeout=100)
    assert done.returncode == 0, done.stderr
    check_once(db, 20_000)
    assert server.stats.requests == 20_000
    # Per-host limits: counted by the servers, across both workers; and actually reached.
    assert max(server.stats.max_per_origin.values()) == 3
    assert "workers:" in done.stderr
    assert "20,000 records stored" in done.stdout
    assert len({row[0] for row in query(db, "SELECT origin FROM fetches")}) == 16
    # The summary's connections are the workers' pools, added up: what the servers accepted.
    opened = re.search(r"connections\s+([\d,]+) opened for 20,000 requests", done.stdout)
    assert opened is not None, done.stdout
    assert int(opened.group(1).replace(",", "")) == server.stats.connections
    assert server.stats.connections < 20_000 // 10  # the workers' pools stay warm
    pool = json.loads(query(db, "SELECT pool FROM sessions")[0][0])
    assert pool["total"]["created"] == server.stats.connections
    assert pool["total"]["created"] + pool["total"]["reused"] >= 20_000
    assert re.search(r"chunks, [\d,]+ connections opened\)", done.stderr)


def test_cli_starts_a_local_cluster(tmp_path: Path) -> None:
    with ThreadedServer(4) as server:
        urls = [f"{server.origins[i % 4]}/w/{i}" for i in range(1_000)]
        path = write_lines(tmp_path / "urls.txt", [*urls, "not a url"])
        db = tmp_path / "r.sqlite"
        done = run_cli(["fetch", str(path), "--db", str(db), "--engine", "dask", "--workers",
                        "2", "--progress", "plain", "--progress-interval", "1"], timeout=60)
    assert done.returncode == 3, done.stderr  # done, one malformed line skipped
    assert query(db, "SELECT count(*), count(DISTINCT line), count(status) FROM fetches") == \
        [(1_001, 1_001, 1_000)]
    assert query(db, "SELECT line, error_type FROM fetches WHERE status IS NULL") == \
        [(1_001, "MalformedLine")]
    assert len(set(re.findall(r"tcp://127\.0\.0\.1:\d+", done.stderr))) == 2  # two workers


def test_rate_held_per_origin_across_chunks(dask_client: Any) -> None:
    rate, per_origin = 20.0, 24
    with ThreadedServer(2) as server:
        seen: dict[str, list[float]] = defaultdict(list)
        begin = server.stats.begin

        def timed(origin: str, target: str) -> None:
            seen[origin].append(time.monotonic())
            begin(origin, target)

        server.stats.begin = timed  # type: ignore[method-assign]
        urls = [f"{server.origins[i % 2]}/r/{i}" for i in range(2 * per_origin)]
        with fetch_distributed(urls, client=dask_client, chunk_size=4, rate=rate,
                               per_host=4) as run:
            results = list(run)
    assert len(results) == 2 * per_origin
    assert run.chunks >= 12  # many chunk boundaries, each a chance for a burst
    for times in seen.values():
        assert len(times) == per_origin
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.75 / rate, gaps  # no burst, not even at a chunk boundary
        assert times[-1] - times[0] >= (per_origin - 1) / rate * 0.95


def test_cli_rate_held_per_origin(tmp_path: Path, dask_client: Any) -> None:
    rate, per_origin = 20.0, 20
    with ThreadedServer(2) as server:
        seen: dict[str, list[float]] = defaultdict(list)
        begin = server.stats.begin

        def timed(origin: str, target: str) -> None:
            seen[origin].append(time.monotonic())
            begin(origin, target)

        server.stats.begin = timed  # type: ignore[method-assign]
        urls = [f"{server.origins[i % 2]}/r/{i}" for i in range(2 * per_origin)]
        db = tmp_path / "r.sqlite"
        done = run_cli(["fetch", str(write_lines(tmp_path / "urls.txt", urls)), "--db",
                        str(db), "--engine", "dask", "--scheduler",
                        dask_client.scheduler.address, "--rate", str(rate), "--per-host", "4",
                        "--chunk", "4", "--progress", "none"], timeout=60)
    assert done.returncode == 0, done.stderr
    check_once(db, 2 * per_origin)
    assert len(seen) == 2
    for times in seen.values():  # seen by the servers, across chunks and workers
        assert len(times) == per_origin
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.75 / rate, gaps
        assert times[-1] - times[0] >= (per_origin - 1) / rate * 0.95


def test_worker_killed_mid_run_loses_nothing(tmp_path: Path, dask_client: Any) -> None:
    lines = 8_000
    with ThreadedServer(8) as server:
        urls = [f"{server.origins[i % 8]}/k/{i}?delay=0.01" for i in range(lines)]
        path = write_lines(tmp_path / "urls.txt", urls)
        db = tmp_path / "r.sqlite"
        proc = start_fetch(path, db, "--engine", "dask", "--scheduler",
                           dask_client.scheduler.address, "--per-host", "4", "--batch", "100")
        try:
            wait_rows(db, proc, 1_000)
            pids = dask_client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err.decode()
        check_once(db, lines)
        # The killed worker's chunks in flight ran again: some lines were requested twice.
        assert server.stats.requests > lines
        assert max(server.stats.max_per_origin.values()) <= 4
        dask_client.wait_for_workers(2, timeout=30)  # its nanny restarted it
        assert victim not in dask_client.run(os.getpid).values()


def test_driver_killed_then_resume_exactly_once(tmp_path: Path, dask_client: Any) -> None:
    lines = 6_000
    with ThreadedServer(8) as server:
        urls = [f"{server.origins[i % 8]}/d/{i}?delay=0.01" for i in range(lines)]
        path = write_lines(tmp_path / "urls.txt", urls)
        db = tmp_path / "r.sqlite"
        flags = ("--engine", "dask", "--scheduler", dask_client.scheduler.address,
                 "--batch", "100")
        proc = start_fetch(path, db, *flags)
        try:
            wait_rows(db, proc, 1_500)
            proc.kill()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        before = stored(db)
        assert before < lines
        done = run_cli(["fetch", str(path), "--db", str(db), "--resume", *flags,
                        "--progress", "none"], timeout=90)
        assert done.returncode == 0, done.stderr
    check_once(db, lines)
    assert query(db, "SELECT sessions, state FROM runs") == [(2, "done")]
    assert query(db, "SELECT count(*) FROM fetches WHERE session = 2")[0][0] == lines - before

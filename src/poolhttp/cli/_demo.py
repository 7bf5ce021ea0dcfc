"""`poolhttp demo`: the bulk fetcher end to end, with nothing but Python and loopback.

It starts the local server (`poolhttp serve-demo`, see `_server`) in a child process on
127.0.0.1, 127.0.0.2, ... (one origin per address), writes a file of URLs spread over them, and
runs `poolhttp fetch` on it: progress, results database and summary are the real thing. The
URL mix is deterministic and includes some 404s, 503s, larger bodies, slow answers and dropped
connections, so the summary has something to show. The child runs with --until-stdin-eof: it
exits when its standard input closes, so it cannot outlive the demo, even one killed by
SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import select
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._drive import fetch_command
from ._errors import CliError
from ._fetch import FetchArgs

__all__ = ["demo_path", "demo_servers", "expected_faults", "fault_lines", "run_demo"]

_START_TIMEOUT = 15.0


def demo_path(index: int) -> str:
    """The path (and query) of the demo's URL number `index`."""
    if index % 1000 == 99:
        return f"/item/{index}?close=1"  # the server hangs up: a ServerDisconnected error
    if index % 500 == 13:
        return f"/item/{index}?status=503"
    if index % 100 == 7:
        return f"/item/{index}?status=404"
    if index % 250 == 42:
        return f"/item/{index}?delay=0.05"
    if index % 10 == 3:
        return f"/item/{index}?size=4096"
    return f"/item/{index}"


@contextmanager
def demo_servers(hosts: int, loop: str = "auto") -> Iterator[list[str]]:
    """Run the local server in a child process; yields its origins."""
    # The loop is chosen here: a missing uvloop is then the parent's clear error, not a child
    # that fails to start.
    child_loop = "uvloop" if loop in ("auto", "uvloop") and _has_uvloop() else "asyncio"
    cmd = [sys.executable, "-m", "poolhttp", "serve-demo", "--hosts", str(hosts), "--json",
           "--until-stdin-eof", "--loop", child_loop]
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield _origins(child)
    finally:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.close()  # the server's signal to exit
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


def _origins(child: subprocess.Popen[bytes]) -> list[str]:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], _START_TIMEOUT)
    line = child.stdout.readline() if ready else b""
    try:
        origins = json.loads(line)["origins"]
    except (ValueError, KeyError, TypeError):
        raise CliError(f"the demo server did not start (exit status {child.poll()}; "
                       f"it said {line[:200]!r})", status=1) from None
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise CliError(f"the demo server announced bad origins: {origins!r}", status=1)
    return origins


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def write_urls(path: Path, origins: list[str], count: int) -> None:
    with open(path, "w", encoding="ascii") as f:
        for index in range(count):
            f.write(f"{origins[index % len(origins)]}{demo_path(index)}\n")


DEFAULT_DEMO_DB = "poolhttp-demo.sqlite"

# The faults the demo's list holds on purpose (see demo_path), by what they look like in the
# results: (the URL's marker, the status or error type it yields, what to call it).
_FAULTS = (("?status=404", "404", "404 Not Found"),
           ("?status=503", "503", "503 Service Unavailable"),
           ("?close=1", "ServerDisconnected", "dropped connections (ServerDisconnected)"))


def run_demo(args: argparse.Namespace) -> int:
    """The URL list lives in a temporary directory removed at the end; the results go to
    --db, by default poolhttp-demo.sqlite in the current directory, to explore."""
    db = Path(args.db or DEFAULT_DEMO_DB)
    with tempfile.TemporaryDirectory(prefix="poolhttp-demo-") as scratch:
        return _demo(args, Path(scratch) / "urls.txt", db)


def _demo(args: argparse.Namespace, urls: Path, db: Path) -> int:
    with demo_servers(args.hosts, args.loop) as origins:
        write_urls(urls, origins, args.count)
        print(f"poolhttp demo: {args.count:,} URLs over {len(origins)} local origins "
              f"({', '.join(origins)})\n  results: {db}", flush=True)
        status = fetch_command(FetchArgs(
            urls=str(urls), db=str(db), concurrency=args.concurrency, per_host=args.per_host,
            progress=args.progress, loop=args.loop, progress_interval=2.0, new=True))
    print()
    for line in fault_lines(db, str(urls.resolve()), args.count):
        print(line)
    print(f"\nExplore the results, for example:\n  sqlite3 {db} 'SELECT status, error_type, "
          "count(*) FROM results WHERE latest GROUP BY 1, 2'")
    return status


def expected_faults(count: int) -> Counter[str]:
    """How many of the first `count` demo URLs carry each deliberate fault."""
    faults: Counter[str] = Counter()
    for index in range(count):
        path = demo_path(index)
        for marker, outcome, _ in _FAULTS:
            if path.endswith(marker):
                faults[outcome] += 1
    return faults


def fault_lines(db: Path, urls: str, count: int) -> list[str]:
    """What the summary's errors were: the demo's deliberate faults, told apart from
    anything else (which would be a real problem), from the stored results."""
    expected = expected_faults(count)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT url, status, error_type, count(*) FROM results WHERE latest AND input = ? "
            "AND (status IS NULL OR status != 200) GROUP BY 1, 2, 3", (urls,)).fetchall()
    finally:
        conn.close()
    deliberate: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for url, status, error_type, n in rows:
        outcome = str(status) if status is not None else error_type
        if any(url.endswith(marker) and outcome == wanted for marker, wanted, _ in _FAULTS):
            deliberate[outcome] += n
        else:
            other[outcome if status is None else f"status {status}"] += n
    lines = ["Deliberate faults in the demo's list (they are there to show in the summary):"]
    for marker, outcome, name in _FAULTS:
        lines.append(f"  {name}: {deliberate[outcome]:,} of the {expected[outcome]:,} URLs "
                     f"with {marker}")
    if other:
        shown = " · ".join(f"{kind} {n:,}" for kind, n in other.most_common())
        lines.append(f"Not deliberate: {shown}; these are real problems of this machine "
                     "or of poolhttp (the demo's other URLs should all answer 200).")
    else:
        lines.append("Every other URL answered 200: no error came from anything but the "
                     "faults above.")
    return lines

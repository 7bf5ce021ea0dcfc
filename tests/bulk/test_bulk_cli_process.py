"""`poolhttp fetch` as a child process: SIGKILL and resume, Ctrl-C, a terminal, stdin."""

from __future__ import annotations

import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import ThreadedServer, cli_env, query, run_cli, write_lines


def stored(db: Path) -> int:
    """Rows committed so far (0 while the database or its schema does not exist yet)."""
    if not db.exists():
        return 0
    try:
        return int(query(db, "SELECT count(*) FROM results")[0][0])
    except sqlite3.OperationalError:
        return 0


def start_fetch(urls: Path, db: Path, *flags: str, **popen: Any) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [sys.executable, "-m", "poolhttp", "fetch", str(urls), "--db", str(db), *flags],
        env=cli_env(), **popen)
    return proc


def wait_for_rows(db: Path, proc: subprocess.Popen[bytes], wanted: int) -> int:
    deadline = time.monotonic() + 60
    while (count := stored(db)) < wanted:
        assert proc.poll() is None, "the fetch ended before it could be interrupted"
        assert time.monotonic() < deadline, f"only {count} rows after 60 s"
        time.sleep(0.02)
    return count


def make_urls(path: Path, server: ThreadedServer, n: int) -> list[str]:
    urls = [f"{server.origins[i % 2]}/k/{i}?delay=0.01" for i in range(n)]
    write_lines(path, urls)
    return urls


def test_sigkill_then_resume_stores_every_line_exactly_once(tmp_path: Path) -> None:
    n = 1500
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=2, record_targets=True) as server:
        urls = make_urls(tmp_path / "u.txt", server, n)
        proc = start_fetch(tmp_path / "u.txt", db, "--batch", "40", "--progress", "none",
                           "-c", "16", "--per-host", "8", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            wait_for_rows(db, proc, n // 3)
        finally:
            proc.kill()
            proc.wait()
        before = stored(db)
        assert 0 < before < n
        assert query(db, "SELECT state, sessions FROM runs") == [("running", 1)]
        resumed = run_cli(["fetch", str(tmp_path / "u.txt"), "--db", str(db), "--resume",
                           "--progress", "none"])
        assert resumed.returncode == 0, resumed.stderr
    rows = query(db, "SELECT line, url, status, session FROM results ORDER BY line")
    assert [r[0] for r in rows] == list(range(1, n + 1))  # each line once: none lost or doubled
    assert [r[1] for r in rows] == urls
    assert all(r[2] == 200 for r in rows)
    assert {r[3] for r in rows} == {1, 2}
    assert query(db, "SELECT state, sessions, lines FROM runs") == [("done", 2, n)]
    targets = server.stats.targets
    assert targets is not None
    assert all(targets["/" + url.split("/", 3)[3]] >= 1 for url in urls)
    requested = sum(targets.values())
    # At least once on the wire; only what was in flight or not yet committed went twice.
    assert n <= requested <= n + 16 + 40 + 16


def test_ctrl_c_stops_cleanly_and_saves_every_result_taken(tmp_path: Path) -> None:
    n = 3000
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=2) as server:
        make_urls(tmp_path / "u.txt", server, n)
        proc = start_fetch(tmp_path / "u.txt", db, "--batch", "100000", "--progress", "plain",
                           "--progress-interval", "0.2", "-c", "8",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # Huge batches: nothing is committed until the end, unless a timed flush runs;
            # wait until some progress was reported instead.
            deadline = time.monotonic() + 60
            assert proc.stderr is not None
            seen = b""
            while b"fetched" not in seen:
                assert time.monotonic() < deadline
                assert proc.poll() is None
                ready, _, _ = select.select([proc.stderr], [], [], 0.5)
                if ready:
                    seen += os.read(proc.stderr.fileno(), 65536)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, (out, err)
        text = out.decode()
        assert "interrupted (SIGINT)" in text
        assert "--resume" in text
        assert b"SIGINT: stopping" in seen + err
        found = re.search(r"requests\s+([\d,]+)", text)
        assert found is not None, text
        taken = int(found.group(1).replace(",", ""))
        assert 0 < taken < n
        assert stored(db) == taken  # every result taken before the stop was saved
        assert query(db, "SELECT state FROM runs") == [("interrupted",)]
        resumed = run_cli(["fetch", str(tmp_path / "u.txt"), "--db", str(db), "--resume",
                           "--progress", "none"])
        assert resumed.returncode == 0, resumed.stderr
    assert query(db, "SELECT count(*), count(DISTINCT line) FROM results") == [(n, n)]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_renders_on_a_terminal(tmp_path: Path) -> None:
    import pty

    with ThreadedServer(hosts=2) as server:
        make_urls(tmp_path / "u.txt", server, 400)
        env = {**cli_env(), "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "40"}
        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI, on the terminal
            os.chdir(tmp_path)
            os.execve(sys.executable, [sys.executable, "-m", "poolhttp", "fetch", "u.txt",
                                       "-c", "8"], env)
        output = b""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        finally:
            os.close(fd)
            _, status = os.waitpid(pid, 0)
    text = output.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert "━" in text  # the bar
    assert "req/s" in text
    assert "400/400" in text
    assert "reuse" in text
    assert "complete" in text


def test_urls_from_standard_input(tmp_path: Path) -> None:
    with ThreadedServer() as server:
        urls = [f"{server.origins[0]}/stdin/{i}" for i in range(50)]
        lines = "\n".join([*urls[:25], "bogus", *urls[25:]]) + "\n"
        result = run_cli(["fetch", "-", "--db", str(tmp_path / "s.sqlite"), "--progress",
                          "none"], stdin=lines.encode())
    assert result.returncode == 3, result.stderr
    assert "standard input:26: skipped" in result.stderr
    rows = query(tmp_path / "s.sqlite", "SELECT count(*), count(status) FROM results")
    assert rows == [(51, 50)]


def test_module_entry_point_and_usage() -> None:
    result = run_cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.startswith("poolhttp ")
    result = run_cli([])
    assert result.returncode == 2
    assert "fetch" in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell and rlimits")
def test_concurrency_beyond_the_open_file_limit_is_refused_up_front(tmp_path: Path) -> None:
    urls = write_lines(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    db = tmp_path / "r.sqlite"
    script = (f'ulimit -n 128 && exec "{sys.executable}" -m poolhttp fetch "{urls}" '
              f'--db "{db}" -c 500')
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60,
                            env=cli_env(), check=False)
    assert result.returncode == 2, result.stderr
    assert "--concurrency 500 needs about 532 open files" in result.stderr
    assert not db.exists()

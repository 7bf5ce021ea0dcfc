"""Runs of `poolhttp fetch` as a whole: the schema-2 columns and views, sessions, resume of
any unfinished run, the whole-run summary, and `attempts` within the retry budget."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from poolhttp.cli import main
from poolhttp.cli._store import APPLICATION_ID, SCHEMA_VERSION, Store
from tests.support.httpbin import Httpbin

from .helpers import ThreadedServer, query, run_cli, write_lines

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def fetch(urls: Path, db: Path, *flags: str) -> int:
    return main(["fetch", str(urls), "--db", str(db), "--progress", "none", *flags])


def dead_pid() -> int:
    """The pid of a process that has ended (not reused this soon)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_rows_carry_origin_content_type_and_readable_times(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=2) as server:
        a, b = server.origins
        urls = write_lines(tmp_path / "u.txt", [f"{a}/x", f"{b}/echo", "http://127.0.0.1:1/",
                                                "not a url"])
        assert fetch(urls, db) == 3  # the malformed line
    rows = query(db, "SELECT line, origin, status, content_type, final_url, error_type, "
                     "fetched_at, fetched_unix, latest, input FROM results ORDER BY line")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (1, a, 200, "text/plain"),
        (2, b, 200, "application/json"),
        (3, "http://127.0.0.1:1", None, None),
        (4, None, None, None),
    ]
    assert [r[4] for r in rows] == [f"{a}/x", f"{b}/echo", None, None]  # final_url
    assert [r[5] for r in rows] == [None, None, "ConnectError", "MalformedLine"]
    assert all(ISO.match(r[6]) for r in rows), rows
    assert all(isinstance(r[7], float) for r in rows)
    assert {r[8] for r in rows} == {1}
    assert {r[9] for r in rows} == {str(urls.resolve())}
    # The per-host query needs no string tricks now.
    assert query(db, "SELECT origin, count(*) FROM results WHERE origin IS NOT NULL "
                     "GROUP BY origin ORDER BY origin") == sorted(
        [(a, 1), (b, 1), ("http://127.0.0.1:1", 1)])


def test_location_follows_redirects_and_stores_the_final_url(tmp_path: Path,
                                                             httpbin: Httpbin) -> None:
    db = tmp_path / "r.sqlite"
    start = httpbin.url("/redirect-to?url=/get&status_code=302")
    urls = write_lines(tmp_path / "u.txt", [start, httpbin.url("/get")])
    assert fetch(urls, db) == 0
    assert query(db, "SELECT status, final_url FROM results ORDER BY line") == [
        (302, start), (200, httpbin.url("/get"))]
    # Not followed without -L; with it, the stored final_url is where the redirect led.
    assert fetch(urls, db, "--new", "-L") == 0
    assert query(db, "SELECT status, url, final_url FROM results WHERE latest ORDER BY line") \
        == [(200, start, httpbin.url("/get")), (200, httpbin.url("/get"), httpbin.url("/get"))]
    # The raw table keeps NULL where nothing was redirected (no copy of every URL).
    assert query(db, "SELECT count(*) FROM fetches WHERE final_url IS NOT NULL") == [(1,)]
    # A resumed run keeps its -L: giving a different value is refused.
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET state = 'interrupted' WHERE run_id = 2")
    conn.execute("DELETE FROM fetches WHERE run_id = 2 AND line = 2")
    conn.commit()
    conn.close()
    assert json.loads(query(db, "SELECT options FROM runs WHERE run_id = 2")[0][0])[
        "follow_redirects"] is True
    assert fetch(urls, db, "--resume") == 0


def test_each_session_keeps_its_own_options_and_pool_figures(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=1) as server:
        urls = write_lines(tmp_path / "u.txt", [f"{server.origins[0]}/{i}" for i in range(50)])
        assert fetch(urls, db, "-c", "4") == 0
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET state = 'interrupted'")
        conn.execute("DELETE FROM fetches WHERE line > 20")
        conn.commit()
        conn.close()
        assert fetch(urls, db, "--resume", "-c", "2", "--per-host", "1") == 0
    sessions = query(db, "SELECT session, options, state, requests, pool, started_at, ended_at "
                         "FROM run_sessions ORDER BY session")
    assert [(s[0], s[2], s[3]) for s in sessions] == [(1, "done", 50), (2, "done", 30)]
    assert [json.loads(s[1])["concurrency"] for s in sessions] == [4, 2]
    assert json.loads(sessions[1][1])["per_host"] == 1
    pool = json.loads(sessions[1][4])
    assert list(pool["origins"]) == [server.origins[0]]
    figures = pool["origins"][server.origins[0]]
    assert figures["created"] + figures["reused"] >= 30  # the 30 requests of session 2
    assert 1 <= figures["created"] <= 2  # --per-host 1: one connection (two after a race)
    assert all(ISO.match(s[5]) and ISO.match(s[6]) for s in sessions)


def test_a_new_run_over_an_unfinished_list_asks_for_resume_or_new(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=1) as server:
        urls = write_lines(tmp_path / "u.txt", [f"{server.origins[0]}/{i}" for i in range(10)])
        assert fetch(urls, db) == 0
        assert fetch(urls, db) == 0  # a finished run does not stand in the way
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET state = 'running', pid = ? WHERE run_id = 1",
                     (dead_pid(),))  # its process died without marking it
        conn.execute("DELETE FROM fetches WHERE run_id = 1 AND line > 5")
        conn.commit()
        conn.close()
        capsys.readouterr()
        assert fetch(urls, db) == 2
        err = capsys.readouterr().err
        for part in ("run 1 over", "--resume", "--new"):
            assert part in err, err
        assert query(db, "SELECT count(*) FROM runs") == [(2,)]  # nothing was started
        # --resume finds run 1, though run 2 is the newest: its process is gone.
        assert fetch(urls, db, "--resume") == 0
        assert query(db, "SELECT run_id, state, sessions FROM runs ORDER BY run_id") == [
            (1, "done", 2), (2, "done", 1)]
        assert query(db, "SELECT count(*), count(DISTINCT line) FROM fetches WHERE run_id = 1") \
            == [(10, 10)]
        assert fetch(urls, db, "--resume", "--new") == 2
        assert "contradict" in capsys.readouterr().err


def test_resume_with_several_unfinished_runs_names_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=1) as server:
        urls = write_lines(tmp_path / "u.txt", [f"{server.origins[0]}/{i}" for i in range(10)])
        other = write_lines(tmp_path / "other.txt", [f"{server.origins[0]}/o"])
        for _ in range(3):
            assert fetch(urls, db, "--new") == 0
        assert fetch(other, db) == 0
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET state = 'interrupted' WHERE run_id IN (1, 3)")
        conn.execute("DELETE FROM fetches WHERE run_id IN (1, 3) AND line > 7")
        conn.commit()
        conn.close()
        capsys.readouterr()
        assert fetch(urls, db, "--resume") == 2
        err = capsys.readouterr().err
        assert "runs 1, 3" in err, err
        assert "--run" in err, err
        assert fetch(urls, db, "--resume", "--run", "2") == 0  # complete: nothing to do
        assert "already complete" in capsys.readouterr().err
        assert fetch(urls, db, "--resume", "--run", "4") == 2
        assert "over" in capsys.readouterr().err  # run 4 is over another list
        assert fetch(urls, db, "--resume", "--run", "9") == 2
        assert "no such run" in capsys.readouterr().err
        assert fetch(urls, db, "--run", "3") == 2  # --run without --resume
        capsys.readouterr()
        assert fetch(urls, db, "--resume", "--run", "3") == 0
        assert fetch(urls, db, "--resume") == 0  # only run 1 is left
    assert query(db, "SELECT run_id, state, sessions FROM runs ORDER BY run_id") == [
        (1, "done", 2), (2, "done", 1), (3, "done", 2), (4, "done", 1)]


def test_the_summary_and_exit_status_cover_every_session(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=1) as server:
        o = server.origins[0]
        lines = [f"{o}/{i}" for i in range(20)] + ["::bad::"] * 2 + \
            ["http://127.0.0.1:1/x"] * 3 + [f"{o}/e?status=503"]
        urls = write_lines(tmp_path / "u.txt", lines)
        first = run_cli(["fetch", str(urls), "--db", str(db), "--progress", "none"])
        assert first.returncode == 3, first.stderr  # malformed lines
        # Forget the good lines of session 1: session 2 fetches only them, without errors.
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET state = 'interrupted'")
        conn.execute("DELETE FROM fetches WHERE status = 200")
        conn.commit()
        conn.close()
        second = run_cli(["fetch", str(urls), "--db", str(db), "--progress", "none",
                          "--resume"])
    assert second.returncode == 3, second.stderr  # session 1's malformed lines still count
    lines = [line.strip() for line in second.stdout.splitlines()]
    run_line = next(line for line in lines if line.startswith("run "))
    assert "2 sessions · 26 records" in run_line, run_line
    assert "21 responses (2xx 20 · 5xx 1)" in run_line, run_line
    assert "3 errors (ConnectError 3)" in run_line, run_line
    assert "2 malformed lines skipped" in run_line, run_line
    requests = next(line for line in lines if line.startswith("requests"))
    assert requests.split()[-1] == "20"  # this session's own figure stays its own


def test_attempts_never_exceed_retries_plus_one(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with ThreadedServer(hosts=1) as server:
        o = server.origins[0]
        # /ok first leaves an idle keep-alive connection, which a later retry of a ?close=1
        # request meets: the client's transparent resend must not count as an attempt.
        urls = write_lines(tmp_path / "u.txt", [f"{o}/ok"] + [f"{o}/c{i}?close=1"
                                                              for i in range(6)]
                           + [f"{o}/s?status=503", "http://127.0.0.1:1/x"])
        assert fetch(urls, db, "--retries", "2", "-c", "2") == 0
    rows = query(db, "SELECT url, attempts, status, error_type FROM results ORDER BY line")
    assert rows[0][1:] == (1, 200, None)
    assert all(r[1] == 3 for r in rows[1:]), rows  # 1 + 2 retries, never 4
    assert rows[-2][2] == 503
    assert rows[-1][3] == "ConnectError"


def test_a_schema_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE runs (run_id INTEGER PRIMARY KEY, input TEXT NOT NULL, fingerprint TEXT,
            options TEXT NOT NULL, state TEXT NOT NULL, sessions INTEGER NOT NULL DEFAULT 1,
            pid INTEGER, host TEXT, lines INTEGER, started_at REAL NOT NULL,
            updated_at REAL NOT NULL, finished_at REAL);
        CREATE TABLE results (run_id INTEGER NOT NULL, line INTEGER NOT NULL, key TEXT,
            method TEXT NOT NULL, url TEXT NOT NULL, status INTEGER, error_type TEXT,
            error TEXT, elapsed REAL, attempts INTEGER NOT NULL, size INTEGER, sha256 TEXT,
            headers TEXT, body BLOB, fetched_at REAL NOT NULL, session INTEGER NOT NULL,
            PRIMARY KEY (run_id, line));
        CREATE INDEX results_status ON results (run_id, status);
        INSERT INTO runs VALUES (1, '/l.txt', NULL,
            '{"method": "GET", "settings": {"concurrency": 8}}', 'done', 1, 1, 'h', 3,
            1700000000.0, 1700000001.0, 1700000001.0);
        INSERT INTO results VALUES (1, 1, NULL, 'GET', 'https://Example.org/a?b', 200, NULL,
            NULL, 0.1, 1, 5, 'x', '[]', NULL, 1700000000.5, 1);
        INSERT INTO results VALUES (1, 2, NULL, 'GET', 'http://h:8080?q', NULL, 'ConnectError',
            'no', 0.1, 1, NULL, NULL, NULL, NULL, 1700000000.5, 1);
        INSERT INTO results VALUES (1, 3, NULL, 'GET', 'junk', NULL, 'MalformedLine', 'bad',
            NULL, 0, NULL, NULL, NULL, NULL, 1700000000.5, 1);
        PRAGMA user_version = 1;
    """)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    Store.open(db).close()
    assert query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db, "SELECT line, origin, fetched_at FROM results ORDER BY line") == [
        (1, "https://example.org:443", "2023-11-14T22:13:20.500Z"),
        (2, "http://h:8080", "2023-11-14T22:13:20.500Z"),
        (3, None, "2023-11-14T22:13:20.500Z")]
    assert query(db, "SELECT run_id, session, options, state FROM sessions") == [
        (1, 1, '{"concurrency":8}', "done")]


def test_a_control_character_is_shown_once_and_escaped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = tmp_path / "u.txt"
    urls.write_bytes(b"http://127.0.0.1:1/a\x1b[31mred\n")
    assert fetch(urls, tmp_path / "r.sqlite") == 3
    err = capsys.readouterr().err
    assert "\x1b" not in err  # never sent raw to the terminal
    assert err.count(r"\x1b[31mred") == 1, err
    assert r"control character ('\x1b' at position 20)" in err, err


def test_progress_shows_an_eta_and_the_busiest_origins() -> None:
    from poolhttp import PoolStats
    from poolhttp.cli._report import eta_text, origin_text, top_origins

    assert eta_text(500, 1000, 100.0) == "ETA 0:05"
    assert eta_text(0, 400_000, 100.0) == "ETA 1:06:40"
    assert eta_text(10, None, 100.0) == eta_text(10, 100, 0.0) == eta_text(100, 100, 5.0) == ""
    pool = PoolStats(per_host={
        "http://a:80": PoolStats(connections=2, idle=1, created=2, reused=8),
        "http://b:80": PoolStats(connections=5, waiting=3, created=5, reused=0),
        "http://c:80": PoolStats(connections=5, waiting=1, created=5, reused=5),
        "http://d:80": PoolStats(connections=1)})
    assert [o for o, _ in top_origins(pool)] == ["http://b:80", "http://c:80", "http://a:80"]
    assert origin_text("http://a:80", pool.per_host["http://a:80"]) == \
        "http://a:80 2 open/1 idle/0 waiting · reuse 80.0%"
    assert top_origins(None) == [] == top_origins(PoolStats())

"""`poolhttp fetch`, `get`, `doctor`, `demo` run in-process: outputs, bad input, refusals."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from poolhttp.cli import main
from poolhttp.cli._doctor import HostLimits, assess
from poolhttp.cli._store import APPLICATION_ID

from .helpers import ThreadedServer, query, write_lines


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(hosts=2) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default results.sqlite lands here, not in the repo


def fetch(*args: str) -> int:
    return main(["fetch", *args, "--progress", "none", "--loop", "asyncio"])


def test_fetch_stores_one_row_per_line(server: ThreadedServer, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = server.origins
    urls = write_lines(tmp_path / "urls.txt", [f"{a}/1", "", "# a comment", f"{b}/2?status=404",
                                               f"{a}/3?size=1000"])
    assert fetch(str(urls)) == 0
    db = tmp_path / "results.sqlite"
    rows = query(db, "SELECT line, status, size, sha256, error_type FROM results ORDER BY line")
    assert [(r[0], r[1]) for r in rows] == [(1, 200), (4, 404), (5, 200)]
    assert rows[2][2] == 1000
    assert rows[2][3] is not None
    assert query(db, "SELECT state, lines, sessions FROM runs") == [("done", 5, 1)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    assert query(db, "PRAGMA application_id") == [(APPLICATION_ID,)]
    out = capsys.readouterr().out
    assert "complete" in out
    assert "requests" in out
    assert "p50" in out
    assert "reuse" in out


def test_malformed_lines_are_reported_with_line_numbers_and_skipped(
        server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = server.origins[0]
    urls = write_lines(tmp_path / "urls.txt", [f"{a}/ok", "not a url", "ftp://x/y", f"{a}/ok2"])
    assert fetch(str(urls), "--db", "r.sqlite") == 3
    err = capsys.readouterr().err
    assert "urls.txt:2: skipped: URL has no scheme" in err
    assert "urls.txt:3: skipped: unsupported URL scheme 'ftp'" in err
    rows = query(tmp_path / "r.sqlite",
                 "SELECT line, status, error_type FROM results ORDER BY line")
    assert rows == [(1, 200, None), (2, None, "MalformedLine"), (3, None, "MalformedLine"),
                    (4, 200, None)]


def test_csv_and_jsonl_inputs(server: ThreadedServer, tmp_path: Path) -> None:
    a = server.origins[0]
    csv_file = write_lines(tmp_path / "in.csv", ["id,URL,method", f"k1,{a}/echo,POST",
                                                 f"k2,{a}/x,", "bad,row"])
    assert fetch(str(csv_file), "--db", "c.sqlite", "--keep-bodies") == 3
    rows = query(tmp_path / "c.sqlite", "SELECT line, method, status, error FROM results "
                                        "ORDER BY line")
    assert rows[0][:3] == (2, "POST", 200)
    assert rows[1][:3] == (3, "GET", 200)
    assert rows[2][0] == 4
    assert "2 fields where the header has 3" in rows[2][3]
    jl = write_lines(tmp_path / "in.jsonl", [
        json.dumps({"url": f"{a}/echo", "method": "PUT", "headers": {"X-A": "1"}, "body": "zz",
                    "key": 7}),
        "{not json", json.dumps({"nourl": 1})])
    assert fetch(str(jl), "--db", "j.sqlite", "--keep-bodies") == 3
    rows = query(tmp_path / "j.sqlite", "SELECT line, key, body, error FROM results ORDER BY line")
    echo = json.loads(rows[0][2])
    assert rows[0][1] == "7"
    assert echo["method"] == "PUT"
    assert echo["headers"]["x-a"] == "1"
    assert echo["body_size"] == 2
    assert "invalid JSON" in rows[1][3]
    assert 'no "url" string' in rows[2][3]


def test_csv_without_url_column_is_refused_up_front(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = write_lines(tmp_path / "in.csv", ["", "name,link", "a,http://127.0.0.1:9/"])
    assert fetch(str(csv_file)) == 2
    assert "line 2: the CSV header has no 'url' column (columns: name, link)" in \
        capsys.readouterr().err
    assert not (tmp_path / "results.sqlite").exists()  # refused before anything was written


def test_jsonl_output_only(server: ThreadedServer, tmp_path: Path) -> None:
    a = server.origins[0]
    urls = write_lines(tmp_path / "urls.txt", [f"{a}/{i}?size=10" for i in range(20)])
    assert fetch(str(urls), "--jsonl", "out.jsonl", "--keep-bodies") == 0
    assert not (tmp_path / "results.sqlite").exists()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in records) == list(range(1, 21))
    first = records[0]
    assert first["status"] == 200
    assert first["size"] == 10
    assert len(first["body_base64"]) > 0
    assert first["headers"][0][0].lower() in ("server", "content-length", "content-type")


def test_unreadable_inputs_and_bad_flags(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch(str(tmp_path / "missing.txt")) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert fetch(str(tmp_path)) == 2
    assert "is a directory" in capsys.readouterr().err
    urls = write_lines(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    for flags, message in [(["--concurrency", "0"], "must be at least 1"),
                           (["--rate", "fast"], "expected a number"),
                           (["--format", "xml"], "invalid choice")]:
        with pytest.raises(SystemExit) as exit_info:
            fetch(str(urls), *flags)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert fetch(str(urls), "--header", "no colon here") == 2
    assert "expected 'Name: value'" in capsys.readouterr().err
    assert fetch(str(urls), "--method", "GE T") == 2
    assert "--method: invalid HTTP method 'GE T'" in capsys.readouterr().err
    assert fetch(str(urls), "--header", "Bad Name: x") == 2
    assert "invalid header name" in capsys.readouterr().err


def test_a_database_that_is_not_ours_is_refused_and_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = write_lines(tmp_path / "u.txt", ["http://127.0.0.1:9/"])
    foreign = tmp_path / "app.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("just some notes, not a database\n" * 10)
    for path in (foreign, text):
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        assert fetch(str(urls), "--db", str(path)) == 2
        err = capsys.readouterr().err
        assert "refusing to" in err
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
        assert not Path(str(path) + "-wal").exists()


def test_resume_refusals(server: ThreadedServer, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    a = server.origins[0]
    urls = write_lines(tmp_path / "u.txt", [f"{a}/{i}" for i in range(5)])
    assert fetch(str(urls), "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert fetch(str(urls)) == 0
    assert fetch(str(urls), "--resume") == 0
    assert "already complete: nothing to resume" in capsys.readouterr().err
    # an interrupted run whose input then changed
    db = tmp_path / "results.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET state = 'interrupted'")
    conn.commit()
    conn.close()
    assert fetch(str(urls), "--resume", "--method", "POST") == 2
    assert "--method differs from run 1's ('GET')" in capsys.readouterr().err
    write_lines(urls, [f"{a}/{i}" for i in range(6)])
    assert fetch(str(urls), "--resume") == 2
    assert "changed since run 1 started" in capsys.readouterr().err
    assert fetch(str(urls), "--jsonl", "x.jsonl", "--resume") == 2
    assert "--resume needs the results database" in capsys.readouterr().err


def test_retries_are_counted_as_attempts(server: ThreadedServer, tmp_path: Path) -> None:
    a = server.origins[0]
    urls = write_lines(tmp_path / "u.txt", [f"{a}/busy?status=503", f"{a}/fine",
                                            f"{a}/broken?status=500"])
    assert fetch(str(urls), "--retries", "2") == 0
    rows = query(tmp_path / "results.sqlite", "SELECT line, status, attempts, error_type "
                                              "FROM results ORDER BY line")
    assert rows[1] == (2, 200, 1, None)
    # The first try and two retries; when they run out the last response is what is stored,
    # so the row keeps its status (GROUP BY status counts it). 500 is retried too.
    assert rows[0] == (1, 503, 3, None)
    assert rows[2] == (3, 500, 3, None)


def test_get_verbose_shows_the_exchange_and_timings(
        server: ThreadedServer, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    url = f"{server.origins[0]}/echo"
    assert main(["get", url, "-v", "-H", "X-Probe: yes"]) == 0
    out, err = capsysbinary.readouterr()
    assert json.loads(out)["headers"]["x-probe"] == "yes"
    text = err.decode()
    assert "> GET /echo HTTP/1.1" in text
    assert "< HTTP/1.1 200 OK" in text
    assert "* connection  new" in text
    for phase in ("* dns", "* connect", "* tls         - (http)", "* first byte", "* total"):
        assert phase in text
    assert "* dns         - (an IP address)" in text  # 127.0.0.1: nothing was looked up
    assert "(cached)" not in text


def test_get_failures(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", f"{server.origins[0]}/x?status=404", "--fail"]) == 22
    assert main(["get", "no-scheme.example"]) == 2
    assert "has no scheme" in capsys.readouterr().err
    assert main(["get", f"{server.origins[0]}/x?close=1"]) == 1
    assert "poolhttp get: ServerDisconnected" in capsys.readouterr().err


def test_doctor(capsys: pytest.CaptureFixture[str]) -> None:
    # Its verdict for a small pool depends on this host's state at the moment (a test that
    # just closed 100,000 connections leaves many ports in TIME_WAIT): 0, or 1 with a reason.
    code = main(["doctor", "--max-connections", "10"])
    out = capsys.readouterr().out
    assert code == 0 or (code == 1 and "WARNING" in out), out
    assert "open files" in out
    assert "ephemeral ports" in out
    assert "TCP sockets" in out
    assert main(["doctor", "--max-connections", "100000000"]) == 1
    assert "WARNING" in capsys.readouterr().out


def test_doctor_verdicts_from_given_limits() -> None:
    quiet = HostLimits(nofile_soft=1024, nofile_hard=4096, fds_open=10,
                       port_range=(32768, 60999), ports_in_use=100,
                       states=Counter({"TIME_WAIT": 100}))
    assert all(finding.ok for finding in assess(quiet, 100))
    assert not assess(quiet, 2000)[0].ok  # more than the soft open-file limit
    churned = replace(quiet, ports_in_use=20_000, states=Counter({"TIME_WAIT": 20_000}))
    verdicts = {finding.text.split(":")[0]: finding.ok for finding in assess(churned, 10_000)}
    assert verdicts == {"open files": False, "ephemeral ports": False,
                        "connection churn": False}
    assert all(finding.ok for finding in assess(replace(churned, nofile_soft=100_000,
                                                        nofile_hard=100_000), 10)[:2])


def test_demo_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "demo.sqlite"
    assert main(["demo", "--count", "400", "--hosts", "2", "--db", str(db),
                 "--progress", "none", "--loop", "asyncio"]) == 0
    out = capsys.readouterr().out
    assert "400 URLs over 2 local origins" in out
    assert "complete" in out
    assert query(db, "SELECT count(*), count(DISTINCT line) FROM results") == [(400, 400)]
    assert query(db, "SELECT count(*) FROM results WHERE status = 404") == [(4,)]
    # The deliberate faults are named, counted from the database, and nothing else failed.
    assert "404 Not Found: 4 of the 4 URLs with ?status=404" in out
    assert "503 Service Unavailable: 1 of the 1 URLs with ?status=503" in out
    assert "Every other URL answered 200" in out


def test_demo_keeps_its_results_here_and_no_temporary_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--count", "1200", "--hosts", "2", "--progress", "none",
                 "--loop", "asyncio"]) == 0
    out = capsys.readouterr().out
    assert list(scratch.iterdir()) == []  # the URL list's directory is gone
    db = tmp_path / "poolhttp-demo.sqlite"
    assert query(db, "SELECT count(*) FROM results") == [(1200,)]
    assert "dropped connections (ServerDisconnected): 2 of the 2 URLs with ?close=1" in out
    assert query(db, "SELECT count(*) FROM results WHERE error_type = 'ServerDisconnected'") \
        == [(2,)]


def test_demo_faults_tell_deliberate_from_real_errors(tmp_path: Path) -> None:
    from poolhttp.cli._demo import expected_faults, fault_lines
    from poolhttp.cli._store import Row, Store

    assert expected_faults(2000) == {"404": 20, "503": 4, "ServerDisconnected": 2}
    db = tmp_path / "f.sqlite"
    store = Store.open(db)
    run = store.start_run("/l.txt", None, {}, {})
    rows: list[Row] = [
            (run.run_id, 1, None, "GET", "http://a/item/7?status=404", "http://a:80", 404,
             None, None, None, None, 0.1, 1, 0, None, None, None, 0.0, 1),
            (run.run_id, 2, None, "GET", "http://a/item/8", "http://a:80", None, None, None,
             "ConnectError", "refused", 0.1, 1, None, None, None, None, 0.0, 1),
            (run.run_id, 3, None, "GET", "http://a/item/9", "http://a:80", 500, None, None,
             None, None, 0.1, 1, 0, None, None, None, 0.0, 1)]
    store.write(rows)
    store.close()
    lines = fault_lines(db, "/l.txt", 10)
    assert lines[1] == "  404 Not Found: 1 of the 1 URLs with ?status=404"
    assert lines[-1].startswith("Not deliberate: ConnectError 1 · status 500 1;"), lines


def test_error_counts_are_singular_and_plural() -> None:
    from poolhttp.cli._report import plural

    assert plural(1, "error") == "1 error"
    assert plural(2, "error") == "2 errors"
    assert plural(1234, "error") == "1,234 errors"
    assert plural(0, "error") == "0 errors"

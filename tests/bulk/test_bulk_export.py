"""`poolhttp export`: the rows of real runs, read back from CSV, JSON lines and Parquet, are
those of the `results` view; run selection, refusals, failures, and bounded memory."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from poolhttp.cli import main
from poolhttp.cli._export import FIELDS, PARQUET_HINT
from poolhttp.cli._store import APPLICATION_ID, Row, Store

from .helpers import ThreadedServer, cli_env, query, run_cli, write_lines

NAMES = [name for name, _ in FIELDS]


def export(*args: str | Path) -> int:
    return main(["export", *map(str, args)])


def view_rows(db: Path, run_id: int | None, *, bodies: bool = False) -> list[dict[str, Any]]:
    """The rows of the `results` view, straight from SQL: what every export must hold."""
    names = [*NAMES, "body"] if bodies else NAMES
    sql = f"SELECT {', '.join(names)} FROM results"
    rows = (query(db, sql + " ORDER BY run_id, line") if run_id is None
            else query(db, sql + " WHERE run_id = ? ORDER BY line", run_id))
    return [dict(zip(names, row, strict=True)) for row in rows]


def b64(body: bytes | None) -> str | None:
    return None if body is None else base64.b64encode(body).decode("ascii")


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of two real runs of `poolhttp fetch` against the local demo server: run 1
    a plain list, run 2 a JSONL list with keys, statuses, bodies, errors and bad lines."""
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "results.sqlite"
    with ThreadedServer(hosts=2) as server:
        a, b = server.origins
        first = write_lines(tmp / "first.txt", [f"{a}/one", f"{b}/two?status=404"])
        second = write_lines(tmp / "second.jsonl", [
            json.dumps({"url": f"{a}/ok", "key": "k1"}),
            json.dumps({"url": f"{b}/missing?status=404", "key": "k,2"}),
            json.dumps({"url": f"{a}/down?status=503", "key": 'quote"3'}),
            json.dumps({"url": f"{a}/big?size=3000"}),
            json.dumps({"url": "http://127.0.0.1:1/refused", "key": "k5"}),
            '{"url": broken json',
            json.dumps({"url": "not a url"}),
            json.dumps({"url": f"{b}/echo", "method": "POST", "body": "hi\nthere"}),
        ])
        common = ["--db", str(db), "--progress", "none", "--loop", "asyncio"]
        assert main(["fetch", str(first), *common]) == 0
        assert main(["fetch", str(second), *common, "--keep-bodies"]) == 3  # malformed lines
    rows = view_rows(db, 2, bodies=True)
    assert [r["status"] for r in rows] == [200, 404, 503, 200, None, None, None, 200]
    assert [r["error_type"] for r in rows][4:7] == ["ConnectError", "MalformedLine",
                                                    "MalformedLine"]
    assert len(rows[3]["body"]) == 3000
    assert len(view_rows(db, 1)) == 2
    return db


# -- every format round-trips -----------------------------------------------------------------
@pytest.mark.parametrize("bodies", [False, True])
def test_csv_holds_the_rows_of_the_view(fetched: Path, tmp_path: Path, bodies: bool) -> None:
    out = tmp_path / "r.csv"
    assert export(fetched, "--format", "csv", "-o", out, *(["--bodies"] if bodies else [])) == 0
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        got = list(reader)
    assert reader.fieldnames == ([*NAMES, "body_base64"] if bodies else NAMES)
    expected = []
    for row in view_rows(fetched, 2, bodies=bodies):
        if bodies:
            row["body_base64"] = b64(row.pop("body"))
        expected.append({k: "" if v is None else str(v) for k, v in row.items()})
    assert got == expected
    # Numbers come back exactly, and the headers are their JSON text.
    view = view_rows(fetched, 2)
    assert [float(r["fetched_unix"]) for r in got] == [r["fetched_unix"] for r in view]
    assert json.loads(got[0]["headers"]) == json.loads(view[0]["headers"])
    if bodies:
        assert base64.b64decode(got[3]["body_base64"]) == view_rows(fetched, 2, bodies=True)[3][
            "body"]


@pytest.mark.parametrize("bodies", [False, True])
def test_jsonl_holds_the_rows_of_the_view(fetched: Path, tmp_path: Path, bodies: bool) -> None:
    out = tmp_path / "r.jsonl"
    assert export(fetched, "-o", out, *(["--bodies"] if bodies else [])) == 0  # by extension
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = []
    for row in view_rows(fetched, 2, bodies=bodies):
        row["headers"] = None if row["headers"] is None else json.loads(row["headers"])
        if bodies:
            row["body_base64"] = b64(row.pop("body"))
        expected.append(row)
    assert got == expected
    assert [list(r) for r in got] == [list(r) for r in expected]  # the documented order
    assert got[0]["headers"][0] == ["Server", "poolhttp-local"]
    assert got[0]["fetched_at"].endswith("Z")


@pytest.mark.parametrize("bodies", [False, True])
def test_parquet_holds_the_rows_of_the_view_with_their_types(
        fetched: Path, tmp_path: Path, bodies: bool) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "r.parquet"
    assert export(fetched, "--format", "parquet", "-o", out,
                  *(["--bodies"] if bodies else [])) == 0
    table = pq.read_table(out)
    assert table.column_names == ([*NAMES, "body"] if bodies else NAMES)
    assert table.to_pylist() == view_rows(fetched, 2, bodies=bodies)
    types = {f.name: f.type for f in table.schema}
    assert types["status"] == types["line"] == types["latest"] == pa.int64()
    assert types["elapsed"] == types["fetched_unix"] == pa.float64()
    assert types["url"] == types["fetched_at"] == types["headers"] == pa.string()
    if bodies:
        assert types["body"] == pa.binary()


def test_parquet_row_groups_are_written_as_rows_come(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    db = build_db(tmp_path / "r.sqlite", 2500)
    out = tmp_path / "r.parquet"
    assert export(db, "-o", out, "--row-group-size", "700") == 0
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [700, 700, 700,
                                                                                400]
    assert pq.read_table(out).to_pylist() == view_rows(db, 1)


def test_standard_output_is_the_default(fetched: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert export(fetched, "--format", "csv", "-o", out) == 0
    to_stdout = run_cli(["export", str(fetched), "--format", "csv"])
    dash = run_cli(["export", str(fetched), "--format", "csv", "-o", "-"])
    assert to_stdout.returncode == dash.returncode == 0, to_stdout.stderr
    assert to_stdout.stdout == dash.stdout == out.read_text(encoding="utf-8")
    # The database holds two runs: standard error says which one was exported.
    assert "holds 2 runs (1-2); exporting the newest, run 2" in to_stdout.stderr


# -- which run --------------------------------------------------------------------------------
def test_run_selection(fetched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def exported(*flags: str) -> list[tuple[int, int]]:
        out = tmp_path / "r.jsonl"
        assert export(fetched, "-o", out, *flags) == 0
        return [(r["run_id"], r["line"]) for r in map(json.loads, out.read_text().splitlines())]

    every = [(r["run_id"], r["line"]) for r in view_rows(fetched, None)]
    assert exported("--run", "1") == [(1, 1), (1, 2)]
    assert "holds 2 runs" not in capsys.readouterr().err  # named: no note
    assert exported() == [k for k in every if k[0] == 2]
    assert "exporting the newest, run 2" in capsys.readouterr().err
    assert exported("--all-runs") == every
    assert len(every) == 10
    assert "rows of every run" in capsys.readouterr().err

    assert export(fetched, "--format", "csv", "--run", "7") == 2
    assert "has no run 7; its runs: 1-2" in capsys.readouterr().err
    both = run_cli(["export", str(fetched), "--format", "csv", "--run", "1", "--all-runs"])
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr


def test_a_database_without_runs_is_refused_and_an_unfinished_run_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    store = Store.open(db)
    assert export(db, "--format", "csv") == 2
    assert "holds no runs yet" in capsys.readouterr().err
    run = store.start_run("/u.txt", None, {"method": "GET"}, {})
    store.write([(run.run_id, 1, None, "GET", "http://h/", "http://h:80", 204, None, None,
                  None, None, 0.5, 1, 0, None, "[]", None, 1.7e9, 1)])
    assert export(db, "--format", "jsonl", "-o", tmp_path / "r.jsonl") == 0
    assert "run 1 is not finished (running): exporting the rows it stored so far" in \
        capsys.readouterr().err
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == [204]
    store.close()


# -- what is not a results database -----------------------------------------------------------
def foreign_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    return path


def make_file(path: Path, kind: str) -> None:
    if kind == "text":
        path.write_text("http://example.org/\n")
    elif kind == "foreign":
        foreign_db(path)
    elif kind == "empty":
        path.write_bytes(b"")  # SQLite takes an empty file for an empty database
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize(("kind", "message"), [
    ("text", "not a SQLite database; nothing to export"),
    ("foreign", "a SQLite database that poolhttp did not create (tables: accounts); nothing "
                "to export"),
    ("empty", "an empty database, not a poolhttp results database"),
    ("missing", "no such file"),
    ("directory", "is a directory, not a results database"),
])
def test_what_is_not_a_results_database_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str) -> None:
    path = tmp_path / "some.db"
    make_file(path, kind)
    before = path.read_bytes() if path.is_file() else None
    out = tmp_path / "out.csv"
    assert export(path, "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "--db" not in err  # fetch's advice, not export's
    assert not out.exists()
    if before is not None:
        assert path.read_bytes() == before  # left untouched


SCHEMA_1 = """
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
    INSERT INTO runs VALUES (1, '/l.txt', NULL, '{"method": "GET", "settings": {}}', 'done',
        1, 1, 'h', 3, 1700000000.0, 1700000001.0, 1700000001.0);
    INSERT INTO results VALUES (1, 1, 'a', 'GET', 'https://Example.org/a?b', 200, NULL, NULL,
        0.1, 1, 5, 'x', '[["Content-Type", "text/html"]]', X'68656c6c6f', 1700000000.5, 1);
    INSERT INTO results VALUES (1, 2, NULL, 'GET', 'http://h:8080?q', NULL, 'ConnectError',
        'no', 0.25, 2, NULL, NULL, NULL, NULL, 1700000000.75, 1);
    INSERT INTO results VALUES (1, 3, NULL, 'GET', 'junk', NULL, 'MalformedLine', 'bad',
        NULL, 0, NULL, NULL, NULL, NULL, 1700000000.5, 1);
    PRAGMA user_version = 1;
"""


def test_a_schema_1_database_is_read_as_its_upgrade_would_show_it_and_left_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(SCHEMA_1)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.close()
    digest = hashlib.sha256(old.read_bytes()).hexdigest()
    assert export(old, "-o", tmp_path / "old.jsonl", "--bodies") == 0
    assert capsys.readouterr().err == "poolhttp export: 3 rows of run 1 to " \
                                      f"{tmp_path / 'old.jsonl'}\n"
    # Not upgraded, not written: still schema 1, byte for byte.
    assert hashlib.sha256(old.read_bytes()).hexdigest() == digest
    assert query(old, "PRAGMA user_version") == [(1,)]

    upgraded = tmp_path / "upgraded.sqlite"
    shutil.copy(old, upgraded)
    Store.open(upgraded).close()  # what `fetch` does to it
    assert export(upgraded, "-o", tmp_path / "upgraded.jsonl", "--bodies") == 0
    got = (tmp_path / "old.jsonl").read_text().splitlines()
    assert got == (tmp_path / "upgraded.jsonl").read_text().splitlines()
    first, second, third = map(json.loads, got)
    assert first["origin"] == "https://example.org:443"
    assert first["final_url"] == "https://Example.org/a?b"
    assert first["headers"] == [["Content-Type", "text/html"]]
    assert first["body_base64"] == b64(b"hello")
    assert first["fetched_at"] == "2023-11-14T22:13:20.500Z"
    assert (second["origin"], second["final_url"], second["attempts"]) == ("http://h:8080",
                                                                          None, 2)
    assert third["origin"] is None


# -- Parquet without pyarrow, flags -----------------------------------------------------------
def run_python(code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=cli_env())


def test_parquet_without_pyarrow_says_what_to_install(fetched: Path, tmp_path: Path) -> None:
    # sys.modules["pyarrow"] = None makes the package look absent to the import system.
    code = ("import sys; sys.modules['pyarrow'] = sys.modules['pyarrow.parquet'] = None; "
            "from poolhttp.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "r.parquet"
    done = run_python(code, "export", fetched, "-o", out)
    assert done.returncode == 2, done.stderr
    assert PARQUET_HINT == "pip install 'poolhttp[parquet]'"
    assert PARQUET_HINT in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_text_formats_never_import_pyarrow(fetched: Path, tmp_path: Path) -> None:
    code = ("import sys; from poolhttp.cli import main; rc = main(sys.argv[1:]); "
            "print('pyarrow' in sys.modules, rc)")
    for fmt in ("csv", "jsonl"):
        done = run_python(code, "export", fetched, "--format", fmt, "-o", tmp_path / "out")
        assert done.stdout.split() == ["False", "0"], done.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--format", "parquet"], "parquet is written to a file: give -o FILE"),
    (["--format", "parquet", "-o", "-"], "parquet is written to a file: give -o FILE"),
    ([], "say --format csv, jsonl or parquet"),
    (["-o", "results.txt"], "say --format csv, jsonl or parquet"),
    (["--format", "csv", "--row-group-size", "10"], "--row-group-size is for --format parquet"),
])
def test_flags_that_cannot_work_are_refused(fetched: Path, flags: list[str],
                                            message: str) -> None:
    done = run_cli(["export", str(fetched), *flags])
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


# -- where it goes ----------------------------------------------------------------------------
def test_an_unwritable_output_is_a_clear_error(fetched: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert export(fetched, "--format", "csv", "-o", tmp_path / "no" / "such" / "r.csv") == 2
    assert "r.csv: cannot write to it: No such file or directory" in capsys.readouterr().err
    assert export(fetched, "--format", "csv", "-o", tmp_path) == 2
    assert "is a directory (-o wants a file)" in capsys.readouterr().err


def test_a_failed_export_leaves_no_partial_file_and_the_old_one_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = build_db(tmp_path / "r.sqlite", 5000)
    out = tmp_path / "r.csv"
    out.write_text("the previous export\n")
    out.chmod(0o640)
    assert export(db, "-o", out) == 0  # replaced in full, keeping its mode
    assert len(out.read_text().splitlines()) == 5001
    assert out.stat().st_mode & 0o777 == 0o640

    # A row that cannot be read (text that is not UTF-8) after thousands that were written.
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO fetches (run_id, line, method, url, attempts, fetched_at, "
                 "session) VALUES (1, 5001, 'GET', CAST(X'ff' AS TEXT), 1, 0, 1)")
    conn.commit()
    conn.close()
    out.write_text("the previous export\n")
    assert export(db, "-o", out) == 1
    assert "reading results failed" in capsys.readouterr().err
    assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()
                  if not p.name.startswith("r.sqlite")) == ["r.csv"]


def test_a_broken_pipe_ends_the_export_quietly(tmp_path: Path) -> None:
    db = build_db(tmp_path / "r.sqlite", 20_000)  # megabytes: far more than a pipe holds
    with subprocess.Popen([sys.executable, "-m", "poolhttp", "export", str(db), "--format",
                           "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=cli_env()) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().startswith(b"run_id,line,key,")
        proc.stdout.close()  # like `| head -1`
        err = proc.stderr.read()
        assert proc.wait(timeout=30) == 1
    assert err == b""  # no traceback, no "Exception ignored"


# -- bounded memory ---------------------------------------------------------------------------
HEADERS = json.dumps([["Server", "poolhttp-local"], ["Content-Type", "text/plain"],
                      ["X-Request-Id", "r" * 160], ["Cache-Control", "max-age=3600, public"]])


def build_db(path: Path, rows: int) -> Path:
    """A results database of one finished run of `rows` rows, written with the Store."""
    store = Store.open(path)
    run = store.start_run("/big.txt", None, {"method": "GET"}, {})
    for start in range(1, rows + 1, 20_000):
        batch: list[Row] = [
            (run.run_id, i, f"k{i}", "GET", f"http://127.0.0.1:8080/items/{i}?page=1",
             "http://127.0.0.1:8080", 200, "text/plain", None, None, None, 0.001 + i * 1e-9, 1,
             1000 + i, f"{i:064x}", HEADERS, None, 1.7e9 + i / 1000, 1)
            for i in range(start, min(start + 20_000, rows + 1))]
        store.write(batch)
    store.end_run(run, "done", rows)
    store.close()
    return path


# The peak RSS of its child, the export: RUSAGE_CHILDREN of a process with no other child.
MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
           "sys.exit(done.returncode)")


def peak_rss(db: Path, out: Path, flags: Sequence[str]) -> int:
    done = run_python(MEASURE, sys.executable, "-m", "poolhttp", "export", db, "-o", out,
                      *flags)
    assert done.returncode == 0, done.stderr
    kib = int(done.stdout)
    return kib if sys.platform == "darwin" else kib * 1024  # bytes on macOS, KiB on Linux


BIG = 150_000
MB = 1_000_000


@pytest.fixture(scope="module")
def big_and_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("memory")
    big = build_db(tmp / "big.sqlite", BIG)
    assert big.stat().st_size > 80 * MB  # 150,000 rows of some 600 bytes
    return big, build_db(tmp / "small.sqlite", 20_000)  # for the fixed cost: imports, buffers


@pytest.mark.parametrize(("fmt", "flags", "bound"), [
    # Held in memory, 150,000 rows would take ~220 MB as Python tuples (~1.5 KB a row), the
    # CSV text alone ~100 MB, and Arrow columns ~90 MB: each far above these bounds.
    ("csv", [], 30 * MB),
    ("parquet", ["--row-group-size", "8192"], 50 * MB),
])
def test_a_large_run_is_exported_in_bounded_memory(
        big_and_small: tuple[Path, Path], tmp_path: Path, fmt: str, flags: list[str],
        bound: int) -> None:
    if fmt == "parquet":
        pq = pytest.importorskip("pyarrow.parquet")
    big, small = big_and_small
    out = tmp_path / f"out.{fmt}"
    baseline = peak_rss(small, out, flags)
    peak = peak_rss(big, out, flags)
    if fmt == "parquet":
        assert pq.ParquetFile(out).metadata.num_rows == BIG
    else:
        with out.open() as f:
            assert sum(1 for _ in f) == BIG + 1
    assert peak - baseline < bound, (peak / MB, baseline / MB)

"""`poolhttp report`: the page of a real run (interrupted by Ctrl-C, then resumed) against
local servers. Its charts and tables are checked against SQL computed here independently, it
is checked to be self-contained, and it is loaded in headless Chromium: no console message,
charts drawn in the DOM, a screenshot that is not blank. Then refusals, and bounded memory."""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from poolhttp.cli import main
from poolhttp.cli._page import PERCENTILES, REPORT_HINT, _ms
from poolhttp.cli._store import APPLICATION_ID, Row, Store

from .helpers import REPO, ThreadedServer, cli_env, query, run_cli, write_lines

CHARTS = ("throughput", "latency-time", "latency-histogram", "statuses", "reuse")


def report(*args: str | Path) -> int:
    return main(["report", *map(str, args)])


# -- a real run: two sessions, statuses, errors, malformed lines, three origins ---------------
def stored(db: Path) -> int:
    try:
        return int(query(db, "SELECT count(*) FROM fetches")[0][0]) if db.exists() else 0
    except sqlite3.OperationalError:
        return 0


def url_list(origins: list[str], n: int) -> list[str]:
    lines = []
    for i in range(n):
        origin = origins[i % len(origins)]
        if i % 300 == 299:
            lines.append("not a url")
        elif i % 100 == 21:
            lines.append("http://127.0.0.1:1/refused")
        elif i % 50 == 7:
            lines.append(f"{origin}/gone/{i}?status=404")
        elif i % 50 == 13:
            lines.append(f"{origin}/busy/{i}?status=503")
        elif i % 10 == 3:
            lines.append(f"{origin}/slow/{i}?delay=0.05")
        else:
            lines.append(f"{origin}/item/{i}?delay=0.01")
    return lines


@pytest.fixture(scope="module")
def fetched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run 1: 1,200 lines, stopped by SIGINT in its first session and resumed with other
    settings; run 2: a short list of its own (the newest run)."""
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "results.sqlite"
    with ThreadedServer(hosts=3) as server:
        urls = write_lines(tmp / "list.txt", url_list(server.origins, 1200))
        proc = subprocess.Popen(
            [sys.executable, "-m", "poolhttp", "fetch", str(urls), "--db", str(db),
             "--progress", "none", "--loop", "asyncio", "-c", "4", "--per-host", "2",
             "--batch", "20"], env=cli_env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while stored(db) < 450:
                assert proc.poll() is None, "the fetch ended before it could be interrupted"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        common = ["--db", str(db), "--progress", "none", "--loop", "asyncio"]
        assert main(["fetch", str(urls), *common, "--resume", "-c", "8"]) == 3  # malformed
        short = write_lines(tmp / "short.txt", [f"{server.origins[0]}/a", f"{server.origins[1]}/b"])
        assert main(["fetch", str(short), *common]) == 0
    assert query(db, "SELECT run_id, state, sessions FROM runs") == [(1, "done", 2),
                                                                      (2, "done", 1)]
    assert query(db, "SELECT count(*) FROM snapshots WHERE run_id = 1 AND session = 1")[0][0] >= 1
    return db


@pytest.fixture(scope="module")
def page(fetched: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert report(fetched, "--run", "1", "-o", out) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page_file(page: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


# -- reading the page back --------------------------------------------------------------------
def figures(page: str) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Each chart's plotly data and layout, as the page passes them to Plotly.newPlot."""
    decoder = json.JSONDecoder()
    body = page[page.index("</head>"):]  # past the inlined plotly.js
    found = {}
    for match in re.finditer(r"Plotly\.newPlot\(\s*", body):
        parts = []
        pos = match.end()
        for _ in range(3):
            value, pos = decoder.raw_decode(body, pos)
            parts.append(value)
            pos = re.compile(r"\s*,\s*").match(body, pos).end()  # type: ignore[union-attr]
        found[parts[0]] = (parts[1], parts[2])
    return found


class Tables(HTMLParser):
    """The text of every cell of every table with an id, and every src/href/srcset value
    and tag of the document (script and style contents are not parsed as markup)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[tuple[str, str, str]] = []
        self.tags: Counter[str] = Counter()
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        values = dict(attrs)
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            if values.get(name) is not None:
                self.links.append((tag, name, str(values[name])))
        if tag == "table" and values.get("id"):
            self._table = str(values["id"])
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parsed(page: str) -> Tables:
    tables = Tables()
    tables.feed(page)
    tables.close()
    return tables


def nearest_rank(values: list[float], per_mille: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * per_mille // 1000)) - 1]


def responses_elapsed(db: Path, sql: str = "", *params: Any) -> list[float]:
    return [r[0] for r in query(db, "SELECT elapsed FROM fetches WHERE run_id = 1 AND status "
                                    f"IS NOT NULL AND elapsed IS NOT NULL {sql}", *params)]


# -- the page shows the run's own numbers -----------------------------------------------------
def test_the_header_shows_the_run(fetched: Path, page: str) -> None:
    (rows, responses, errors, malformed), = query(
        fetched, "SELECT count(*), count(status), count(CASE WHEN status IS NULL AND "
                 "error_type IS NOT 'MalformedLine' THEN 1 END), count(CASE WHEN error_type "
                 "= 'MalformedLine' THEN 1 END) FROM fetches WHERE run_id = 1")
    assert (rows, malformed) == (1200, 4)
    assert errors >= 12  # the refused origin
    text = re.sub(r"<[^>]+>", " ", page[page.index("</head>"):])
    text = re.sub(r"\s+", " ", html.unescape(text))
    assert "poolhttp report: run 1" in text
    assert str(fetched.parent / "list.txt") in text
    assert "1 · 2 sessions" in text
    assert "done (exit 3): done, malformed input lines were skipped" in text
    assert f"{rows:,}: {responses:,} responses, {errors:,} errors, {malformed:,} malformed " \
           "lines" in text
    statuses = query(fetched, "SELECT status, count(*) FROM fetches WHERE run_id = 1 AND "
                              "status IS NOT NULL GROUP BY 1 ORDER BY 1")
    assert " · ".join(f"{s} {n:,}" for s, n in statuses) in text
    assert [s for s, _ in statuses] == [200, 404, 503]
    assert '"method": "GET"' in text  # the run's options
    for pm, label in ((500, "p50 latency"), (950, "p95 latency"), (990, "p99 latency")):
        assert f"{_ms(nearest_rank(responses_elapsed(fetched), pm))} {label}" in text
    header, *sessions = parsed(page).tables["session-table"]
    assert header[:6] == ["#", "started", "ended", "active", "state", "results"]
    stored_sessions = query(fetched, "SELECT session, state, requests, options FROM sessions "
                                     "WHERE run_id = 1 ORDER BY session")
    assert [(int(r[0]), r[4], r[5]) for r in sessions] == [
        (n, state, f"{requests:,}") for n, state, requests, _ in stored_sessions]
    assert [r[4] for r in sessions] == ["interrupted", "done"]
    assert [json.loads(r[-1])["concurrency"] for r in sessions] == [4, 8]  # their settings


def test_the_status_chart_counts_every_record(fetched: Path, page: str) -> None:
    data, _ = figures(page)["statuses"]
    pie = next(trace for trace in data if trace["type"] == "pie")
    got = dict(zip(pie["labels"], pie["values"], strict=True))
    expected = {str(s) if s is not None else e: n for s, e, n in query(
        fetched, "SELECT status, CASE WHEN status IS NULL THEN error_type END, count(*) "
                 "FROM fetches WHERE run_id = 1 GROUP BY 1, 2")}
    assert got == expected
    assert sum(got.values()) == 1200
    assert {"200", "404", "503", "ConnectError", "MalformedLine"} <= set(got)


def test_the_throughput_chart_holds_every_request_by_class(fetched: Path, page: str) -> None:
    data, layout = figures(page)["throughput"]
    assert layout["barmode"] == "stack"
    counts = {trace["name"]: sum(trace["customdata"]) for trace in data}
    (ok, client, server, errors), = query(
        fetched, "SELECT count(CASE WHEN status BETWEEN 200 AND 299 THEN 1 END), "
                 "count(CASE WHEN status BETWEEN 400 AND 499 THEN 1 END), "
                 "count(CASE WHEN status BETWEEN 500 AND 599 THEN 1 END), "
                 "count(CASE WHEN status IS NULL AND error_type IS NOT 'MalformedLine' "
                 "THEN 1 END) FROM fetches WHERE run_id = 1")
    assert counts == {"2xx": ok, "4xx": client, "5xx": server, "errors": errors}
    # Rates: results per second of each bucket (a full bucket: its count over its width).
    width = data[0]["width"]
    for trace in data:
        for rate, n in zip(trace["y"], trace["customdata"], strict=True):
            assert rate >= n / width - 1e-9
    # The second session starts where the first one's active time ends, and is marked.
    first, second = query(fetched, "SELECT started_at, ended_at FROM sessions WHERE "
                                   "run_id = 1 ORDER BY session")
    assert layout["shapes"][0]["x0"] == pytest.approx(first[1] - first[0])
    assert layout["annotations"][0]["text"] == "session 2"
    assert max(max(t["x"]) for t in data) < (first[1] - first[0]) + (second[1] - second[0])


def test_latency_percentiles_over_time_are_those_of_each_interval(fetched: Path,
                                                                   page: str) -> None:
    data, _ = figures(page)["latency-time"]
    width = figures(page)["throughput"][0][0]["width"]
    starts = dict(query(fetched, "SELECT session, started_at FROM sessions WHERE run_id = 1"))
    first_seconds = query(fetched, "SELECT ended_at - started_at FROM sessions WHERE "
                                   "run_id = 1 AND session = 1")[0][0]
    groups: dict[tuple[int, int], list[float]] = {}
    for session, at, elapsed in query(
            fetched, "SELECT session, fetched_at, elapsed FROM fetches WHERE run_id = 1 AND "
                     "status IS NOT NULL AND elapsed IS NOT NULL"):
        groups.setdefault((session, int((at - starts[session]) / width)), []).append(elapsed)
    expected_x = [(first_seconds if s == 2 else 0) + (b + 0.5) * width
                  for s, b in sorted(groups)]
    by_name = {trace["name"]: trace for trace in data}
    assert sorted(by_name) == sorted(f"p{pm / 10:g}" for pm in PERCENTILES)
    for pm in PERCENTILES:
        trace = by_name[f"p{pm / 10:g}"]
        assert trace["x"] == pytest.approx(expected_x)
        assert trace["y"] == pytest.approx([nearest_rank(groups[k], pm) * 1000
                                            for k in sorted(groups)])


def test_the_histogram_holds_every_response(fetched: Path, page: str) -> None:
    data, layout = figures(page)["latency-histogram"]
    bins = {tuple(point[:2]): point[2] for point in data[0]["customdata"] if point[2]}
    elapsed = responses_elapsed(fetched)
    assert sum(bins.values()) == len(elapsed)
    assert min(low for low, _ in bins) <= min(elapsed) * 1000
    assert max(high for _, high in bins) >= max(elapsed) * 1000
    for low, high in bins:
        assert high / low == pytest.approx(10 ** (1 / 20))
    assert layout["xaxis"]["type"] == "log"
    assert [a["text"].split()[0] for a in layout["annotations"]] == ["p50", "p95", "p99"]


def test_the_origin_table_agrees_with_sql(fetched: Path, page: str) -> None:
    header, *rows = parsed(page).tables["origin-table"]
    assert header == ["origin", "requests", "responses", "errors", "4xx", "5xx", "p50", "p95",
                      "connections opened", "reuse"]
    pools = [json.loads(p[0]) for p in query(
        fetched, "SELECT pool FROM sessions WHERE run_id = 1 ORDER BY session")]
    expected = []
    for origin, requests, responses, errors, client, server in query(
            fetched, "SELECT origin, count(*), count(status), count(*) - count(status), "
                     "count(CASE WHEN status / 100 = 4 THEN 1 END), "
                     "count(CASE WHEN status / 100 = 5 THEN 1 END) FROM fetches "
                     "WHERE run_id = 1 AND origin IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1"):
        elapsed = responses_elapsed(fetched, "AND origin = ?", origin)
        created = sum(p["origins"].get(origin, {}).get("created", 0) for p in pools)
        reused = sum(p["origins"].get(origin, {}).get("reused", 0) for p in pools)
        expected.append([
            origin, f"{requests:,}", f"{responses:,}", f"{errors:,}", f"{client:,}",
            f"{server:,}", _ms(nearest_rank(elapsed, 500) if elapsed else None),
            _ms(nearest_rank(elapsed, 950) if elapsed else None), f"{created:,}",
            f"{100 * reused / (created + reused):.1f}%" if created + reused else "\u2013"])
    assert rows == expected
    assert len(rows) == 4  # three servers and the refused origin
    assert sum(int(r[1].replace(",", "")) for r in rows) == 1200 - 4  # all but malformed


def test_the_reuse_chart_ends_each_session_with_its_pool_figures(fetched: Path,
                                                                 page: str) -> None:
    data, layout = figures(page)["reuse"]
    by_name = {trace["name"]: trace for trace in data}
    so_far = by_name["reuse so far (%)"]
    sessions = query(fetched, "SELECT ended_at - started_at, pool FROM sessions WHERE "
                              "run_id = 1 ORDER BY session")
    offset = 0.0
    for seconds, pool in sessions:
        total = json.loads(pool)["total"]
        end = offset + seconds
        i = min(range(len(so_far["x"])), key=lambda j: abs(so_far["x"][j] - end))
        assert so_far["x"][i] == pytest.approx(end)
        assert so_far["y"][i] == pytest.approx(
            100 * total["reused"] / (total["created"] + total["reused"]))
        offset = end
    snapshots = query(fetched, "SELECT count(*) FROM snapshots WHERE run_id = 1")[0][0]
    assert len(so_far["x"]) >= min(snapshots, 2)
    assert max(v for v in by_name["open"]["y"] if v is not None) >= 1
    assert layout["yaxis"]["range"] == [0, 105]


def test_the_page_is_self_contained(page: str) -> None:
    doc = parsed(page)
    assert doc.links == []  # no src, href, srcset, ...: nothing to fetch, not even a link
    assert doc.tags["link"] == doc.tags["iframe"] == doc.tags["img"] == 0
    assert doc.tags["script"] == 1 + len(CHARTS)  # plotly.js inlined, then one per chart
    assert page.count("Plotly.newPlot(") == len(CHARTS)
    style = page[page.index("<style>"):page.index("</style>")]
    assert "url(" not in style
    assert "@import" not in style
    assert len(page) > 1_000_000  # plotly.js itself is in the page
    assert set(figures(page)) == set(CHARTS)


def test_the_database_is_left_as_it_was(fetched: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(fetched.read_bytes()).hexdigest()
    assert report(fetched, "-o", tmp_path / "r.html") == 0
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == before


# -- in a real browser ------------------------------------------------------------------------
def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("poolhttp_dev", REPO / "dev.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; installed with apt-get (as dev.py does) when it is missing."""
    found = shutil.which("chromium")
    if found is None:
        try:
            load_dev().ensure_debian_packages({"chromium": "chromium"})
        except SystemExit as exc:
            pytest.fail(f"Chromium is needed and could not be installed: {exc}",
                        pytrace=False)
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"installing Chromium failed: {exc}", pytrace=False)
        found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed (`python3 dev.py test` installs it)",
                    pytrace=False)
    return found


CONSOLE = re.compile(r':CONSOLE(?::\d+|\(\d+\))\] "(?P<message>.*)", source: (?P<source>.*)$',
                     re.MULTILINE)


def browse(chromium: str, page: Path, tmp: Path, *flags: str) -> tuple[str, list[str]]:
    """Chromium, headless, on `page`: its standard output and the console messages the
    page logged. Every host name resolves to nothing: the page can reach no network."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'profile'}",
         "--enable-logging=stderr", "--v=1", "--virtual-time-budget=15000",
         "--hide-scrollbars", *flags, page.resolve().as_uri()],
        capture_output=True, text=True, errors="replace", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    messages = [m.group("message") for m in CONSOLE.finditer(done.stderr)]
    return done.stdout, messages


def test_the_console_check_sees_errors(chromium: str, tmp_path: Path) -> None:
    """The check below is not blind: a page that logs and throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('broken chart');"
                   "undefinedFunction();</script></body></html>")
    _, messages = browse(chromium, bad, tmp_path, "--dump-dom")
    assert "broken chart" in messages
    assert any("undefinedFunction is not defined" in m for m in messages), messages


class ChartDom(HTMLParser):
    """For each chart div: its plotly SVG layers, and the shapes drawn for its data."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, Counter[str]] = {name: Counter() for name in CHARTS}
        self._stack: list[str | None] = []  # the chart each open element is in

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        chart = self._stack[-1] if self._stack else None
        if values.get("id") in self.found:
            chart = values["id"]
        if chart is not None:
            classes = set((values.get("class") or "").split())
            counter = self.found[chart]
            if tag == "svg" and "main-svg" in classes:
                counter["svg"] += 1
            if tag == "path" and (values.get("d") or "").startswith("M"):
                for kind in ("js-line", "js-fill", "surface"):
                    if kind in classes:
                        counter[kind] += 1
                if not classes:
                    counter["path"] += 1
            if tag == "g" and "point" in classes:
                counter["point"] += 1
        if tag not in ("br", "img", "input", "meta", "link", "hr"):
            self._stack.append(chart)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._stack and tag not in ("br", "img", "input", "meta", "link", "hr"):
            self._stack.pop()


def test_chromium_loads_the_page_without_console_messages_and_draws_the_charts(
        chromium: str, page_file: Path, tmp_path: Path) -> None:
    dom, messages = browse(chromium, page_file, tmp_path, "--dump-dom")
    assert messages == []  # no error, no warning, nothing logged at all
    charts = ChartDom()
    charts.feed(dom)
    found = charts.found
    for name in CHARTS:
        assert found[name]["svg"] >= 1, (name, found[name])
    assert found["throughput"]["point"] >= 10  # stacked bars
    assert found["latency-time"]["js-line"] >= len(PERCENTILES)
    assert found["latency-histogram"]["js-fill"] >= 1
    assert found["statuses"]["surface"] >= 5  # pie slices: 200, 404, 503, errors, malformed
    assert found["statuses"]["point"] >= 5  # and their bars
    assert found["reuse"]["js-line"] >= 3


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB or RGBA PNG (stdlib only: zlib, and the
    five scanline filters of the PNG specification undone by hand)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert depth == 8, depth
    assert colour in (2, 6), colour
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + (left + prev[x]) // 2) & 255
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 255
        prev = line
        rows.append(bytes(line) if bpp == 3 else bytes(
            v for i, v in enumerate(line) if i % 4 != 3))
    return width, height, rows


def colours(rows: list[bytes]) -> Iterator[bytes]:
    for row in rows:
        for x in range(0, len(row), 3):
            yield row[x:x + 3]


def test_chromium_renders_the_charts_in_a_screenshot(chromium: str, page_file: Path,
                                                     tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    # Half the device pixels of a 1280 x 4400 window: the whole page, quick to decode.
    browse(chromium, page_file, tmp_path, f"--screenshot={shot}", "--window-size=1280,4400",
           "--force-device-scale-factor=0.5")
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (640, 2200)
    seen = Counter(colours(rows))
    background = seen.most_common(1)[0][0]
    assert len(seen) > 200, len(seen)  # text, lines, fills: far from a blank page
    assert sum(n for c, n in seen.items() if c != background) > 0.3 * width * height
    # The charts' own colours are drawn: 2xx bars (#2ca02c), 5xx (#d62728), 4xx (#ff7f0e).
    for colour in ("2ca02c", "d62728", "ff7f0e"):
        assert seen[bytes.fromhex(colour)] > 50, colour
    # A blank page for comparison: one colour.
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    browse(chromium, blank, tmp_path, f"--screenshot={tmp_path / 'blank.png'}",
           "--window-size=400,300")
    assert len(set(colours(png_pixels((tmp_path / "blank.png").read_bytes())[2]))) == 1


# -- which run --------------------------------------------------------------------------------
def test_the_newest_run_is_the_default_and_others_are_named(
        fetched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert report(fetched, "-o", out) == 0
    err = capsys.readouterr().err
    assert "holds 2 runs (1-2); reporting on the newest, run 2 (--run N for another)" in err
    assert f"poolhttp report: run 2 (2 records) to {out}" in err
    assert "poolhttp report: run 2" in out.read_text()
    assert report(fetched, "--run", "7", "-o", out) == 2
    assert "has no run 7; its runs: 1-2" in capsys.readouterr().err


def test_an_unfinished_run_is_reported_as_far_as_it_went(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    store = Store.open(db)
    out = tmp_path / "r.html"
    assert report(db, "-o", out) == 2
    assert "holds no runs yet; nothing to report" in capsys.readouterr().err
    run = store.start_run("/u.txt", None, {"method": "GET"}, {"concurrency": 2})
    assert report(db, "-o", out) == 0  # a run without any row yet
    assert "Nothing to show" in out.read_text()
    store.write([(run.run_id, 1, None, "GET", "http://h/", "http://h:80", 204, None, None,
                  None, None, 0.5, 1, 0, None, "[]", None, time.time(), 1)])
    assert report(db, "-o", out) == 0
    assert "run 1 is not finished (running): reporting on the rows it stored so far" in \
        capsys.readouterr().err
    text = out.read_text()
    assert "still running, or its process died" in text
    assert "500 ms" in text  # its one response's latency
    store.close()


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
    INSERT INTO runs VALUES (1, '/l.txt', NULL, '{"method": "GET", "settings": {"c": 1}}',
        'done', 1, 1, 'h', 3, 1700000000.0, 1700000001.0, 1700000001.0);
    INSERT INTO results VALUES (1, 1, NULL, 'GET', 'https://Example.org/a', 200, NULL, NULL,
        0.1, 1, 5, 'x', NULL, NULL, 1700000000.5, 1);
    INSERT INTO results VALUES (1, 2, NULL, 'GET', 'http://h:8080/', NULL, 'ConnectError',
        'no', 0.25, 2, NULL, NULL, NULL, NULL, 1700000000.75, 1);
    INSERT INTO results VALUES (1, 3, NULL, 'GET', 'junk', NULL, 'MalformedLine', 'bad',
        NULL, 0, NULL, NULL, NULL, NULL, 1700000000.5, 1);
    PRAGMA user_version = 1;
"""


def test_a_schema_1_database_is_reported_without_being_upgraded(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.executescript(SCHEMA_1)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    # The run was resumed once: schema 1 kept no sessions, only the rows' session numbers.
    conn.execute("UPDATE runs SET sessions = 2, finished_at = 1700000101.0")
    conn.execute("INSERT INTO results VALUES (1, 4, NULL, 'GET', 'https://example.org/b', "
                 "200, NULL, NULL, 0.2, 1, 5, 'y', NULL, NULL, 1700000100.5, 2)")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(old.read_bytes()).hexdigest()
    out = tmp_path / "old.html"
    assert report(old, "-o", out) == 0
    assert hashlib.sha256(old.read_bytes()).hexdigest() == digest
    page = out.read_text()
    _, *rows = parsed(page).tables["origin-table"]
    assert [r[:4] for r in rows] == [["https://example.org:443", "2", "2", "0"],
                                     ["http://h:8080", "1", "0", "1"]]
    charts = figures(page)
    assert "reuse" not in charts  # no snapshots in schema 1: no such chart
    assert "done (exit 3)" in page
    _, *sessions = parsed(page).tables["session-table"]
    assert [(r[0], r[4]) for r in sessions] == [("1", "interrupted"), ("2", "done")]
    assert sum(sum(t["customdata"]) for t in charts["throughput"][0]) == 3  # every request
    assert charts["throughput"][1]["annotations"][0]["text"] == "session 2"


# -- what cannot be reported ------------------------------------------------------------------
def make_file(path: Path, kind: str) -> None:
    if kind == "text":
        path.write_text("http://example.org/\n")
    elif kind == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE accounts (id INTEGER)")
        conn.commit()
        conn.close()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize(("kind", "message"), [
    ("text", "not a SQLite database; nothing to report"),
    ("foreign", "a SQLite database that poolhttp did not create (tables: accounts); nothing "
                "to report"),
    ("empty", "an empty database, not a poolhttp results database"),
    ("missing", "no such file"),
    ("directory", "is a directory, not a results database"),
])
def test_what_is_not_a_results_database_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str) -> None:
    path = tmp_path / "some.db"
    make_file(path, kind)
    before = path.read_bytes() if path.is_file() else None
    out = tmp_path / "out.html"
    assert report(path, "-o", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("poolhttp report: "), err
    assert message in err, err
    assert "--db" not in err
    assert "export" not in err
    assert not out.exists()
    if before is not None:
        assert path.read_bytes() == before


def test_an_unwritable_output_is_a_clear_error(fetched: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert report(fetched, "-o", tmp_path / "no" / "such" / "r.html") == 2
    assert "r.html: cannot write to it: No such file or directory" in capsys.readouterr().err
    assert report(fetched, "-o", tmp_path) == 2
    assert "is a directory (-o wants a file)" in capsys.readouterr().err


def test_a_database_that_cannot_be_read_fails_and_leaves_no_file(
        fetched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.sqlite"
    shutil.copy(fetched, db)
    conn = sqlite3.connect(db)  # an error message that is not UTF-8 text
    conn.execute("INSERT INTO fetches (run_id, line, method, url, error_type, error, attempts, "
                 "fetched_at, session) VALUES (1, 5000, 'GET', 'http://h/', 'ConnectError', "
                 "CAST(X'ff' AS TEXT), 1, 0, 1)")
    conn.commit()
    conn.close()
    out = tmp_path / "r.html"
    out.write_text("the previous report\n")
    assert report(db, "--run", "1", "-o", out) == 1
    assert "reading results failed" in capsys.readouterr().err
    assert out.read_text() == "the previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("r.sqlite")) \
        == ["r.html"]


def run_python(code: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=cli_env())


def test_without_plotly_the_report_says_what_to_install(fetched: Path, tmp_path: Path) -> None:
    # sys.modules["plotly"] = None makes the package look absent to the import system.
    code = ("import sys; sys.modules['plotly'] = None; "
            "from poolhttp.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "r.html"
    done = run_python(code, "report", fetched, "-o", out)
    assert done.returncode == 2, done.stderr
    assert REPORT_HINT == "pip install 'poolhttp[report]'"
    assert REPORT_HINT in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_only_the_report_imports_plotly(fetched: Path, tmp_path: Path) -> None:
    code = ("import sys; from poolhttp.cli import main; rc = main(sys.argv[1:]); "
            "print('plotly' in sys.modules, rc)")
    done = run_python(code, "export", fetched, "--format", "csv", "-o", tmp_path / "out.csv")
    assert done.stdout.split() == ["False", "0"], done.stderr
    done = run_python(code, "report", fetched, "-o", tmp_path / "out.html")
    assert done.stdout.split() == ["True", "0"], done.stderr


def test_the_report_is_on_the_command_line(fetched: Path, tmp_path: Path) -> None:
    done = run_cli(["report", "--help"])
    assert done.returncode == 0
    assert "--run N" in done.stdout
    assert "report.html" in done.stdout
    out = tmp_path / "r.html"
    done = run_cli(["report", str(fetched), "--run", "1", "-o", str(out)])
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")


# -- bounded memory ---------------------------------------------------------------------------
def build_db(path: Path, rows: int) -> Path:
    """A finished run of `rows` rows over 200 origins, written with the Store: statuses,
    errors, spread latencies, and a snapshot a second."""
    store = Store.open(path)
    run = store.start_run("/big.txt", None, {"method": "GET"}, {"concurrency": 64})
    start = time.time() - rows / 5000
    for first in range(1, rows + 1, 20_000):
        batch: list[Row] = []
        for i in range(first, min(first + 20_000, rows + 1)):
            origin = f"http://127.0.0.{i % 200 + 1}:8080"
            status = None if i % 97 == 0 else 503 if i % 41 == 0 else 200
            batch.append((run.run_id, i, None, "GET", f"{origin}/items/{i}", origin, status,
                          "text/plain", None, None if status else "ConnectError",
                          None if status else "refused", 0.0005 * (1 + (i * 7919) % 1000), 1,
                          100, None, None, None, start + i / 5000, 1))
            if i % 5000 == 0:
                store.snapshot(run, (i, i // 97, 64, 4, 0, 200 + i // 1000, i - 200))
        store.write(batch)
    store.end_run(run, "done", rows, requests=rows, pool={
        "total": {"created": 300, "reused": rows - 300, "closed": 0, "retries": 0},
        "origins": {}})
    store.close()
    return path


MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
           "sys.exit(done.returncode)")
MB = 1_000_000


def peak_rss(db: Path, out: Path) -> int:
    done = run_python(MEASURE, sys.executable, "-m", "poolhttp", "report", db, "-o", out)
    assert done.returncode == 0, done.stderr
    kib = int(done.stdout)
    return kib if sys.platform == "darwin" else kib * 1024


def test_a_large_run_is_reported_in_bounded_memory(tmp_path: Path) -> None:
    small = build_db(tmp_path / "small.sqlite", 10_000)
    big = build_db(tmp_path / "big.sqlite", 200_000)
    out = tmp_path / "r.html"
    baseline = peak_rss(small, out)
    peak = peak_rss(big, out)
    # 200,000 rows held in Python would take some 50 MB as (elapsed, status, time) tuples
    # alone; the report holds only aggregates.
    assert peak - baseline < 15 * MB, (peak / MB, baseline / MB)
    page = out.read_text()
    assert "200,000" in page
    _, *rows = parsed(page).tables["origin-table"]
    assert len(rows) == 50  # the 50 busiest of 200 origins
    assert "The 50 origins with the most requests, of 200." in page

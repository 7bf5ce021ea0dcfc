"""The benchmark still runs: `bench/run.py --smoke` gives every client row a figure.

The peers are not installed in the test environment (niquests' urllib3-future would replace
urllib3 there): the run uses the benchmark's own environment, .venv-bench/, which
`bench/run.py --setup-only` creates on first use (from PyPI; about a minute) and refreshes
when bench/requirements.txt or pyproject.toml change. A peer that cannot be installed, imported
or driven fails the test by name; nothing is skipped. The HTTP/2 workloads have rows of their
own, each of which must have been checked to use its protocol (HTTP/2, or HTTP/1.1 for the
reference rows). On the HTTPS new-connection workloads every row must have nginx's count of
its TLS handshakes and of those that resumed; poolhttp's rows must resume by default and never
with `tls_resumption=False`. The counts are tiny and the figures meaningless: this checks
function, not speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
# Building .venv-bench from nothing: pip downloads and installs the pinned peers (and, without
# a pycurl wheel for this Python, builds pycurl). Then the smoke run itself: well under a minute.
SETUP_TIMEOUT = 540
SMOKE_TIMEOUT = 240


def _catalog() -> Any:
    """bench/harness/catalog.py: the rows and workloads the run must cover."""
    spec = importlib.util.spec_from_file_location("bench_catalog",
                                                  ROOT / "bench" / "harness" / "catalog.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only a parent that never reaps it keeps it listed.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _run(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], str]:
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or b""
        out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        pytest.fail(f"{' '.join(cmd[1:])}: no end within {timeout:.0f} s\n{out[-4000:]}",
                    pytrace=False)
    return proc, f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.timeout(SETUP_TIMEOUT + SMOKE_TIMEOUT + 60)
def test_smoke_run_gives_every_row_a_figure(tmp_path: Path) -> None:
    if not (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")):
        pytest.fail("nginx is not installed (`python3 dev.py test` installs it)", pytrace=False)
    setup, output = _run([sys.executable, str(RUN), "--setup-only"], SETUP_TIMEOUT)
    assert setup.returncode == 0, f"could not build the benchmark's environment\n{output}"

    results, docs = tmp_path / "results", tmp_path / "docs"
    proc, output = _run([sys.executable, str(RUN), "--smoke", "--results-dir", str(results),
                         "--write-docs", "--docs-dir", str(docs)], SMOKE_TIMEOUT)
    files = sorted(results.glob("*.json"))
    assert len(files) == 1, f"expected one results file\n{output}"
    data = json.loads(files[0].read_text())
    summary, unavailable = data["summary"], data["plan"]["unavailable"]
    # The run used the benchmark's environment, not this one.
    assert data["meta"]["python_prefix"] == str((ROOT / ".venv-bench").resolve()), output

    catalog = _catalog()
    protocol_token = {catalog.HTTP2: "HTTP/2.0", catalog.HTTP11: "HTTP/1.1"}  # $server_protocol
    problems = []
    for workload in catalog.WORKLOADS:
        rows = summary.get(workload.name)
        if rows is None:
            problems.append(f"{workload.name}: not run")
            continue
        for client in catalog.CLIENTS:
            row = rows.get(client.key)
            where = f"{workload.name}/{client.key}"
            if not catalog.runs_on(client, workload):
                # The HTTP/2 workloads have rows of their own, and the other rows skip them.
                if row is not None:
                    problems.append(f"{where}: a row for a workload it does not run")
                continue
            if row is None:
                problems.append(f"{where}: no row")
            elif sys.version_info < client.min_python:
                # No release of the library for this Python (.venv-bench is made from the
                # same one): the row must be reported as left out, and why.
                if client.key not in unavailable:
                    problems.append(f"{where}: not reported as unavailable on this Python")
            elif client.key in unavailable:
                problems.append(f"{where}: not run: {unavailable[client.key]}")
            elif row["failed_runs"]:
                problems.append(f"{where}: failed: {row['failure']}")
            elif not row["median"] or row["median"] <= 0:
                problems.append(f"{where}: no positive figure ({row['median']})")
            elif row["errors"]:
                problems.append(f"{where}: {row['errors']} errors: {row['error_sample']}")
            elif row["new_connections"] is None or row["new_connections"] < 1:
                problems.append(f"{where}: no server-side connection count "
                                f"({row['new_connections']})")
            elif catalog.checks_protocol(workload) and (
                    row["protocols_seen"] != [client.protocol]
                    or set(row["server_protocols"]) != {protocol_token[client.protocol]}):
                # The run fails such a row itself; this keeps that check from going missing.
                problems.append(f"{where}: protocol not verified as {client.protocol}: the "
                                f"library said {row['protocols_seen']}, nginx logged "
                                f"{row['server_protocols']}")
            elif catalog.counts_resumption(workload):
                # nginx's $ssl_session_reused for each handshake of the keep-alive-off TLS
                # block: counted for every row; poolhttp resumes by default, and not at all
                # with tls_resumption=False.
                if not row["handshakes"]:
                    problems.append(f"{where}: nginx logged no TLS handshake")
                elif client.key.startswith("poolhttp") and "noresume" in client.key:
                    if row["resumed"]:
                        problems.append(f"{where}: {row['resumed']} handshakes resumed with "
                                        "tls_resumption=False")
                elif client.key.startswith("poolhttp") and not row["resumed"]:
                    problems.append(f"{where}: no handshake resumed (of {row['handshakes']}), "
                                    "though TLS session resumption is poolhttp's default")
    for key, row in data["idle_memory"].items():
        if row["failure"] or row["rss_median"] is None or not row["heap_median"]:
            problems.append(f"idle-memory/{key}: {row['failure'] or 'no figure'}")
    if not data["idle_memory"]:
        problems.append("idle-memory: not run")
    assert not problems, "\n".join(problems) + "\n" + output

    # Nothing outlives the run: no nginx, no worker process.
    pids = [*data["meta"]["nginx_pids"], *{r["pid"] for r in data["runs"] if "pid" in r}]
    assert pids, output
    assert not [pid for pid in pids if _alive(pid)], f"processes left running\n{output}"

    # The report renders, with a section per workload and every row.
    markdown = (docs / "benchmarks.md").read_text()
    for workload in catalog.WORKLOADS:
        assert workload.title in markdown
    for client in catalog.CLIENTS:
        assert client.label in markdown
    assert "Protocol of each row, checked on every run" in markdown
    assert "| Resumed |" in markdown
    assert (docs / "benchmarks.png").stat().st_size > 0  # matplotlib is in the bench env
    assert proc.returncode == 0, output

"""Turning results into text: the console summary, docs/benchmarks.md and docs/benchmarks.png."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import (
    CLIENTS,
    CLIENTS_BY_KEY,
    SYNC_MAX_THREADS,
    Workload,
    baseline_key,
    checks_protocol,
    counts_resumption,
    floor_key,
)
from .server import Nginx
from .server import nginx_version as _nginx_version

if TYPE_CHECKING:
    from .orchestrate import Plan

ROOT = Path(__file__).resolve().parent.parent.parent
CHART_CLIENTS_ORDER = [c.key for c in CLIENTS]


# -- facts about the machine and the software -------------------------------------------
def nginx_version(server: Nginx) -> str:
    return _nginx_version(server.binary) if server.binary else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_revision() -> str | None:
    """The commit poolhttp was measured at, marked when src/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def environment(plan: Plan, pinning: str, nginx: str) -> dict[str, Any]:
    dists: list[str] = []
    for client in plan.clients:
        for dist in client.dists:
            if dist not in dists:
                dists.append(dist)
    libcurl = None
    if any(c.key == "pycurl" for c in plan.clients):
        try:
            import pycurl

            libcurl = next((p for p in pycurl.version.split() if p.startswith("libcurl/")),
                           None)
        except ImportError:
            pass
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_prefix": str(Path(sys.prefix).resolve()),
        "openssl": ssl.OPENSSL_VERSION,
        "libcurl": libcurl,
        "nginx": nginx,
        "pinning": pinning,
        "versions": {d: _version(d) for d in dists},
        "poolhttp_revision": _git_revision(),
    }


def plan_facts(plan: Plan) -> dict[str, Any]:
    from .orchestrate import IDLE_CONNECTIONS

    return {
        "mode": plan.mode,
        "runs": plan.runs,
        "time_limit": plan.time_limit,
        "scale": plan.scale,
        "batched_workers": plan.batch,
        "clients": [c.key for c in plan.clients],
        "unavailable": plan.unavailable,
        "workloads": [{"name": w.name, "title": w.title, "unit": w.unit,
                       "concurrency": w.concurrency, "requests": plan.requests(w),
                       "hosts": w.hosts, "per_host": w.per_host} for w in plan.workloads],
        "idle_connections": IDLE_CONNECTIONS[plan.mode] if plan.idle_memory else None,
    }


# -- number formatting -------------------------------------------------------------------
def _num(value: float | None, unit: str = "req/s") -> str:
    if value is None:
        return "n/a"
    if unit == "MB/s" and value < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"


def _kib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} KiB"


def _kib_range(row: dict[str, Any], how: str) -> str:
    low, high = row[f"{how}_min"], row[f"{how}_max"]
    return "n/a" if low is None else f"{low / 1024:.1f} - {high / 1024:.1f}"


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row["note"]:
        notes.append(row["note"])
    if row["unavailable"]:
        notes.append(f"not run: {row['unavailable']}")
    if row["failed_runs"]:
        notes.append(f"{row['failed_runs']} run(s) failed: {str(row['failure']).splitlines()[0]}")
    if row["timed_out_runs"]:
        notes.append(f"stopped at the time limit in {row['timed_out_runs']}/{row['runs']} "
                     "runs")
    if row["errors"] and row["error_sample"]:
        notes.append(f"first error: {row['error_sample']}")
    return "; ".join(n.replace("|", "/") for n in notes)


def _protocol(row: dict[str, Any]) -> str:
    """The protocol a row's runs were checked to have used, or why there is none."""
    if not row.get("protocol"):
        return ""
    if row["unavailable"] or row["median"] is None:
        return "not verified (no run succeeded)"
    if row["failed_runs"]:
        return f"{row['protocol']} in the runs that passed the check"
    return str(row["protocol"])


def _protocol_line(rows: dict[str, Any]) -> list[str]:
    """For a workload whose runs check the protocol: which protocol each row used."""
    parts = []
    for row in rows.values():
        if not row.get("protocol"):
            continue
        served = row.get("server_protocols") or {}
        count = ", ".join(f"{n:,} {p}" for p, n in sorted(served.items()))
        parts.append(f"{row['label']} {_protocol(row)}" + (f" (nginx: {count})" if count else ""))
    if not parts:
        return []
    return ["Protocol of each row, checked on every run (the library's own report of a "
            "response, and nginx's `$server_protocol` for every request; a row that used "
            "another protocol fails): " + "; ".join(parts) + ".", ""]


def _resumed(row: dict[str, Any]) -> str:
    """The share of a row's TLS handshakes that nginx saw resume a session."""
    if row.get("handshakes") is None:
        return ""
    if not row["handshakes"]:
        return "n/a"
    return f"{100 * row['resumed'] / row['handshakes']:.0f} %"


def _resumption_line(rows: dict[str, Any]) -> list[str]:
    """For a workload whose server block logs `$ssl_session_reused`: the counts behind the
    Resumed column, and poolhttp's own count where it differs."""
    parts = []
    for row in rows.values():
        if row.get("handshakes") is None or not row["handshakes"]:
            continue
        text = f"{row['label']} {row['resumed']:,} of {row['handshakes']:,}"
        if row.get("client_resumed") is not None and row["client_resumed"] != row["resumed"]:
            text += f" (its own count: {row['client_resumed']:,})"
        parts.append(text)
    if not parts:
        return []
    return ["Resumed: the share of the row's TLS handshakes (one per request here, warm-up "
            "included, summed over the runs) that resumed a session, from nginx's "
            "`$ssl_session_reused` for every request: " + "; ".join(parts) + ".", ""]


# -- console -----------------------------------------------------------------------------
def console(plan: Plan, summary: dict[str, Any], idle: dict[str, Any]) -> str:
    lines = [""]
    for workload in plan.workloads:
        rows = summary[workload.name]
        lines.append(f"== {workload.name}: {workload.title} "
                     f"({plan.requests(workload):,} requests x {plan.runs} runs)")
        checked = checks_protocol(workload)
        resumption = counts_resumption(workload)
        width = max([22, *(len(row["label"]) for row in rows.values())])
        lines.append(f"   {'client':<{width}} {'concurrency':<13} {workload.unit:>10} "
                     f"{'vs poolhttp':>11} {'new conns':>9} {'peak RSS':>9} {'errors':>6}"
                     + (f" {'resumed':>8}" if resumption else "")
                     + ("  protocol" if checked else ""))
        for group in ("async", "sync"):
            shown = [row for row in rows.values() if row["group"] == group]
            for row in shown:
                rss = f"{row['peak_rss_mib']:.0f} MiB" if row["peak_rss_mib"] else "n/a"
                conns = ("n/a" if row["new_connections"] is None
                         else f"{row['new_connections']:.0f}")
                flag = " *" if row["timed_out_runs"] else ""
                proto = f"  {_protocol(row)}" if checked else ""
                resumed = f" {_resumed(row):>8}" if resumption else ""
                lines.append(f"   {row['label']:<{width}} {row['concurrency']:<13} "
                             f"{_num(row['median'], workload.unit):>10} "
                             f"{_ratio(row['ratio']):>11} {conns:>9} {rss:>9} "
                             f"{row['errors']:>6}{resumed}{proto}{flag}")
            if shown:
                lines.append("")
    if any(r["timed_out_runs"] for rows in summary.values() for r in rows.values()):
        lines.append("   * stopped at the time limit; rated on the requests it finished")
    if idle:
        lines.append("== memory per idle keep-alive connection (RSS growth / Python heap)")
        for row in idle.values():
            lines.append(f"   {row['label']:<22} {_kib(row['rss_median']):>10} "
                         f"{_kib(row['heap_median']):>10}  ({row['connections']} connections)")
    return "\n".join(lines)


# -- markdown ----------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A markdown table; `align` has one of l/r per column."""
    marks = {"l": ":---", "r": "---:"}
    out = ["| " + " | ".join(header) + " |",
           "| " + " | ".join(marks[a] for a in align) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _workload_section(workload: Workload, rows: dict[str, Any], plan_w: dict[str, Any],
                      runs: int) -> list[str]:
    unit = workload.unit
    n = workload.max_connections
    limits = f"at most {n} connection{'s' if n > 1 else ''}"
    if workload.per_host:
        limits += f", {workload.per_host} per origin"
    out = [f"### {workload.title}", "",
           f"`{workload.name}`: {workload.what} {plan_w['requests']:,} requests per run, "
           f"{runs} run{'s' if runs > 1 else ''}, {limits}.", ""]
    checked = checks_protocol(workload)
    resumption = counts_resumption(workload)
    for group, title in (("async", "Async"), ("sync", "Sync")):
        body = []
        for row in rows.values():
            if row["group"] != group:
                continue
            label = f"**{row['label']}**" if row["baseline"] else row["label"]
            spread = ("n/a" if row["min"] is None
                      else f"{_num(row['min'], unit)} - {_num(row['max'], unit)}")
            body.append([
                label, row["concurrency"], *([_protocol(row)] if checked else []),
                _num(row["median"], unit), spread, _ratio(row["ratio"]),
                "n/a" if row["new_connections"] is None else f"{row['new_connections']:,.0f}",
                *([_resumed(row)] if resumption else []),
                "n/a" if row["peak_rss_mib"] is None else f"{row['peak_rss_mib']:.0f} MiB",
                str(row["errors"]), _notes(row)])
        if not body:
            continue
        key = baseline_key(workload, group)
        base = CLIENTS_BY_KEY[key].label if key else "poolhttp"
        out.append(f"{title} (ratios against {base}):")
        out.append("")
        out += _table(["Client", "Concurrency", *(["Protocol"] if checked else []), unit,
                       "Range", "vs poolhttp", "New conns", *(["Resumed"] if resumption else []),
                       "Peak RSS", "Errors", "Notes"],
                      body, "ll" + ("l" if checked else "") + "rrrr" + ("r" if resumption else "")
                      + "rrl")
        out.append("")
    if checked:
        out += _protocol_line(rows)
    if resumption:
        out += _resumption_line(rows)
    return out


def _glance(summary: dict[str, Any], plan: Plan) -> list[str]:
    """One line per workload: poolhttp against the floor and the fastest other client."""
    body = []
    for workload in plan.workloads:
        rows = summary[workload.name]
        cells = [workload.title, workload.unit]
        for group in ("async", "sync"):
            base_key, low_key = baseline_key(workload, group), floor_key(workload, group)
            base = rows.get(base_key, {}).get("median") if base_key else None
            floor = rows.get(low_key, {}).get("median") if low_key else None
            # Peers speaking poolhttp's protocol: on HTTP/2 the HTTP/1.1 references are not.
            protocol = CLIENTS_BY_KEY[base_key].protocol if base_key else None
            peers = [r for k, r in rows.items() if r["group"] == group and r["median"]
                     and not CLIENTS_BY_KEY[k].floor and not k.startswith("poolhttp")
                     and CLIENTS_BY_KEY[k].protocol == protocol]
            best = max(peers, key=lambda r: r["median"], default=None)
            cells.append(_num(base, workload.unit))
            cells.append("n/a" if not (base and floor) else f"{100 * base / floor:.0f} %")
            cells.append("n/a" if best is None or not base
                         else f"{best['label']} ({best['median'] / base:.2f}x)")
        body.append(cells)
    return _table(["Workload", "Unit", "poolhttp (asyncio)", "of floor", "fastest async peer",
                   "poolhttp (sync)", "of floor", "fastest sync peer"], body, "llrrlrrl")


def markdown(data: dict[str, Any], plan: Plan, chart: str | None) -> str:
    meta, summary, idle = data["meta"], data["summary"], data["idle_memory"]
    facts = {w["name"]: w for w in data["plan"]["workloads"]}
    headline = next((w for w in plan.workloads if w.headline), plan.workloads[0]
                    if plan.workloads else None)
    out = ["# Benchmarks", "",
           "<!-- Generated by `python3 dev.py bench` (bench/run.py); do not edit by hand. -->",
           "",
           "poolhttp side by side with other Python HTTP clients, each driven the same way "
           "against one local nginx. Every figure is the median of "
           f"{plan.runs} interleaved run{'s' if plan.runs > 1 else ''}; higher is better. "
           "How to run it and how to read the columns: [bench/README.md](../bench/README.md).",
           ""]
    if plan.mode != "full":
        out += [f"> **{plan.mode} run** (`--{plan.mode}`): fewer requests, fewer runs and "
                "only some workloads. A quick check, not figures to quote.", ""]
    out += [f"Measured {meta['started']} on {meta['cpu']} ({meta['cpus']} CPUs), "
            f"{meta['python']}; poolhttp {meta['versions'].get('poolhttp', '?')}"
            + (f" at {meta['poolhttp_revision']}" if meta.get("poolhttp_revision") else "")
            + ".", ""]
    if meta.get("note"):
        out += [f"> **Note:** {meta['note']}", ""]
    if chart and headline is not None:
        out += [f"![{headline.title}: {headline.unit} per client]({chart})", ""]
    out += ["## At a glance", "",
            "poolhttp's median, its share of the raw floor (the same work with no client "
            "logic at all), and the fastest other client of the same kind with its ratio to "
            "poolhttp. On the HTTP/2 workloads poolhttp is its HTTP/2 row (poolhttp h2 "
            "(asyncio)) and the peers are the HTTP/2 ones (not the HTTP/1.1 references); "
            "there is no raw floor and no sync row.", ""]
    out += _glance(summary, plan)
    out += ["", "## Results", ""]
    for workload in plan.workloads:
        out += _workload_section(workload, summary[workload.name], facts[workload.name],
                                 plan.runs)
    if idle:
        n = data["plan"]["idle_connections"]
        out += ["## Memory per idle keep-alive connection", "",
                f"A client sends one warm-up request, then {n} concurrent requests, which "
                f"leave {n} keep-alive connections idle in its pool. **RSS** is the growth "
                "of the process's resident memory divided by the connections nginx saw "
                "opened: an upper bound, since what the allocator keeps from "
                f"{n} requests in flight counts too. **Python heap** is the same done again "
                "under tracemalloc, counting only Python allocations still alive afterwards: "
                "the connections' own state (socket, transport, parser, pool entry), without "
                "kernel buffers. aiohttp is there for scale. poolhttp's sync Client is not "
                "measured: holding its connections open at once takes as many threads, whose "
                "stacks would swamp the figure; nor is httpx, whose pool serves that many "
                "concurrent requests over a handful of connections.", ""]
        body = []
        for row in idle.values():
            opened = sorted({o for o in row["opened"] if o is not None})
            failure = str(row["failure"]).splitlines()[0] if row["failure"] else ""
            failure = failure or row.get("note", "")
            body.append([row["label"], _kib(row["rss_median"]), _kib_range(row, "rss"),
                         _kib(row["heap_median"]), _kib_range(row, "heap"),
                         ", ".join(str(o) for o in opened) or "n/a", failure])
        out += _table(["Client", "RSS", "Range (KiB)", "Python heap", "Range (KiB)",
                       "Opened", "Notes"], body, "lrrrrrl")
        out.append("")
    out += ["## Machine and software", ""]
    machine = [["CPU", f"{meta['cpu']}, {meta['cpus']} logical CPUs"],
               ["OS, kernel", f"{meta['os']}, Linux {meta['kernel']}"],
               ["Python", meta["python"]],
               ["nginx", meta["nginx"]],
               ["TLS (Python ssl)", meta["openssl"]]]
    if meta.get("libcurl"):
        machine.append(["libcurl (pycurl's)", meta["libcurl"].split("/", 1)[-1]])
    machine.append(["CPU pinning", meta["pinning"]])
    out += _table(["", ""], machine, "ll")
    out += ["", "Libraries:", ""]
    out += _table(["Package", "Version"], [[k, v] for k, v in meta["versions"].items()], "ll")
    out += ["", "## How each client is used", ""]
    out += _table(["Row", "Usage"], [[c.label, c.how] for c in plan.clients], "ll")
    out += ["", "## Method", ""]
    out += ["- **Server**: nginx, one worker process, pinned to its own CPU; access log off; "
            "keep-alive limits far above any run's request count. Small bodies come from "
            "`return 200`, 16 KiB and 1 MiB bodies from files via sendfile; POST bodies are "
            "read off the socket and discarded. A separate server block has keep-alive off, "
            "another serves HTTPS with a throw-away CA, and the plain one also listens on "
            "127.0.0.2 .. 127.0.0.20 for the 20-origin workload. Traffic never leaves "
            "loopback.",
            "- **HTTPS, new connection per request** (`https-newconn*`): one more TLS server "
            "block (same CA) has keep-alive off, so nginx answers `Connection: close` and every "
            "request pays for a TCP connect and a TLS handshake; it has a session cache "
            "(`ssl_session_cache shared:SSL:10m`) and session tickets on, so a client that "
            "offers a session can resume it. It logs each request's `$ssl_session_reused` "
            "(buffered, as the HTTP/2 block's log), and the Resumed column is nginx's count of "
            "the row's handshakes that resumed: who resumed is the server's word, not the "
            "client's. poolhttp's rows run with resumption on (its default) and, as a "
            "reference, off (`tls_resumption=False`); the raw floors keep the last session "
            "and offer it to the next handshake.",
            "- **HTTP/2**: one more TLS server block (same CA) offers h2 and http/1.1 by ALPN, "
            "at most 128 concurrent streams per connection (nginx's default); it alone keeps "
            "an access log, of `$server_protocol` only (buffered), so each run of the HTTP/2 "
            "workloads counts which protocol its requests came over. Its rows are separate "
            "from the HTTP/1.1 workloads' ones: each client set up for HTTP/2, and two "
            "HTTP/1.1-over-TLS references (poolhttp's own and aiohttp, which has no HTTP/2). "
            "Every run checks the protocol twice, by one response's version as the library "
            "reports it and by nginx's log of every request, and fails if either differs "
            "from the row's. Everywhere else every client speaks HTTP/1.1 (the TLS block of "
            "`https` offers no h2).",
            "- **Clients**: each run of each client is a fresh Python process pinned to the "
            "other CPU, so clients never share an interpreter, a pool or a warm cache. Every "
            "client gets the same work: the same requests, the same concurrency and a "
            "connection limit equal to the concurrency (per-origin limits where set), keep-"
            "alive on, retries off, one long-lived client object. Async rows run one task per "
            f"unit of concurrency; sync rows run threads sharing one client, at most "
            f"{SYNC_MAX_THREADS} (a Python process with hundreds of threads mostly measures "
            "the GIL); pycurl drives its transfers with one CurlMulti.",
            "- **Timing**: each task or thread first sends one untimed warm-up request "
            "(connections open, lazy set-up paid; smoke runs skip it); the clock then runs "
            "from the first to the last of the run's requests. Figures are successful "
            "requests per second, or response-body megabytes (10^6 bytes) per second. A run "
            "that reaches the time "
            f"limit ({plan.time_limit:g} s of measurement) stops there and is rated on the "
            "requests it finished (flagged in the notes), which keeps the whole benchmark's "
            "length bounded whatever the slowest client.",
            f"- **Runs**: each figure is the median of {plan.runs} run"
            f"{'s' if plan.runs > 1 else ''}, interleaved across "
            "clients (A B C A B C ...) so that drift of the machine spreads over every "
            "client; Range is the lowest and highest run.",
            "- **Ratios**: async rows against poolhttp (asyncio), sync rows against poolhttp "
            "(sync), both on the same workload; above 1.00x means faster than poolhttp.",
            "- **New conns**: connections nginx accepted during the client's process, from "
            "its `stub_status` counter before and after, minus the status query's own "
            "connection; warm-up included. With keep-alive working it equals the number of "
            "connections the client needed (its concurrency at most); with keep-alive off it "
            "is one per request.",
            "- **Peak RSS**: the client process's maximum resident set size (interpreter and "
            "imports included), median over runs.",
            "- **Errors**: failed requests, wrong status codes and bodies of the wrong length, "
            "summed over runs.",
            ""]
    return "\n".join(out)


# -- chart -------------------------------------------------------------------------------
def chart(summary: dict[str, Any], plan: Plan, path: Path) -> bool:
    """A horizontal bar chart of the headline workload; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    headline = next((w for w in plan.workloads if w.headline), None)
    if headline is None:
        return False
    rows = summary[headline.name]
    entries: list[tuple[str, float, str]] = []
    for group in ("async", "sync"):
        for key in CHART_CLIENTS_ORDER:
            row = rows.get(key)
            if row is None or row["group"] != group:
                continue
            client = CLIENTS_BY_KEY[key]
            kind = "poolhttp" if key.startswith("poolhttp") else "floor" if client.floor else "peer"
            entries.append((f"{row['label']}  [{row['concurrency']}]", row["median"] or 0.0,
                            kind + "-" + group))
        entries.append(("", 0.0, "gap"))
    entries = entries[:-1]
    colors = {"poolhttp": "#1f6feb", "peer": "#8c959f", "floor": "#d0d7de"}
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(entries) + 1.6), dpi=110)
    ys = list(range(len(entries)))[::-1]
    for y, (_, value, kind) in zip(ys, entries, strict=True):
        if kind == "gap":
            continue
        color = colors[kind.split("-")[0]]
        ax.barh(y, value, color=color, edgecolor="#57606a" if "floor" in kind else color,
                hatch="//" if "floor" in kind else None)
        ax.text(value, y, f" {_num(value, headline.unit)}", va="center", fontsize=8)
    shown = [(y, e[0]) for y, e in zip(ys, entries, strict=True) if e[2] != "gap"]
    ax.set_yticks([y for y, _ in shown])
    ax.set_yticklabels([label for _, label in shown], fontsize=8)
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel(f"{headline.unit} (median of {plan.runs}; higher is better)")
    ax.set_title(f"{headline.title}\nasync clients (top) and sync clients (bottom)", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_xlim(0, max((e[1] for e in entries), default=1.0) * 1.15 or 1.0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_docs(data: dict[str, Any], plan: Plan, docs_dir: Path) -> list[Path]:
    docs_dir.mkdir(parents=True, exist_ok=True)
    png = docs_dir / "benchmarks.png"
    written = []
    has_chart = chart(data["summary"], plan, png)
    if has_chart:
        written.append(png)
    md = docs_dir / "benchmarks.md"
    md.write_text(markdown(data, plan, png.name if has_chart else None))
    written.insert(0, md)
    return written

"""A worker process: reads jobs (one JSON object per line) on stdin, answers each on stdout.

Run as `python -m harness.worker` with bench/ on the path. The orchestrator normally gives a
worker a single job, so every measurement starts in a fresh interpreter; `--smoke` batches one
client's jobs in one process to save start-up time. Answers are prefixed so that anything a
library prints cannot be mistaken for one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import socket
import sys
import time
import traceback
import tracemalloc
from typing import Any

from .catalog import CLIENTS_BY_KEY
from .drivers import drive_async, drive_threads, result

ANSWER = "@@bench-result "


def _raise_fd_limit() -> None:
    """512 connections plus the interpreter's own files exceed a 1024 soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _run_loop(coro: Any, loop_name: str) -> Any:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _async_adapter(key: str) -> tuple[type[Any], str]:
    from .peers import ASYNC_ADAPTERS

    # "poolhttp-uvloop" -> poolhttp on uvloop, "poolhttp-h2-asyncio" -> poolhttp-h2 on asyncio
    family, _, loop_name = key.rpartition("-")
    if key in ASYNC_ADAPTERS:  # e.g. httpx-async, aiosonic: asyncio only
        return ASYNC_ADAPTERS[key], "asyncio"
    return ASYNC_ADAPTERS[family], loop_name


def _call_for(adapter: Any, job: dict[str, Any]) -> Any:
    if job["method"] == "POST":
        return adapter.post
    return adapter.stream if job["stream"] else adapter.get


async def _load_async(cls: type[Any], job: dict[str, Any]) -> dict[str, Any]:
    adapter = cls(job)
    try:
        await adapter.open()
        measured, warm, seconds, timed_out = await drive_async(job, _call_for(adapter, job))
        info = adapter.info()
        expected: str | None = job.get("protocol")
        if expected:
            # Once per run, untimed, over the connections the run used: the protocol as the
            # library reports it. (The orchestrator counts nginx's view of every request.)
            seen = await adapter.protocol(job["urls"][0])
            if seen != expected:
                raise RuntimeError(f"protocol check: {job['client']} got a response over "
                                   f"{seen}, expected {expected}")
            info["protocol"] = seen
    finally:
        await adapter.close()
    return result(measured, warm, seconds, timed_out, **info)


def run_load(job: dict[str, Any]) -> dict[str, Any]:
    key = job["client"]
    model = CLIENTS_BY_KEY[key].model
    if model == "raw-tasks":
        from .raw import run_raw_async

        return run_raw_async(job, key.split("-", 1)[1])
    if model == "raw-threads":
        from .raw import run_raw_threads

        return run_raw_threads(job)
    if model == "multi":
        from .curl import run_pycurl

        return run_pycurl(job)
    if model == "tasks":
        cls, loop_name = _async_adapter(key)
        return dict(_run_loop(_load_async(cls, job), loop_name))
    from .peers import SYNC_ADAPTERS

    adapter = SYNC_ADAPTERS[key](job)
    stuck = 0
    try:
        measured, warm, seconds, timed_out, stuck = drive_threads(job, _call_for(adapter, job))
        info = adapter.info()
    finally:
        if not stuck:  # closing a client under threads stuck inside it could hang as well
            adapter.close()
    return result(measured, warm, seconds, timed_out, **info)


# -- memory per idle connection ----------------------------------------------------------
def _rss_bytes() -> int:
    """Resident set size now (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _accepted(status_port: int) -> int:
    """nginx's count of accepted connections, as in server.Nginx.accepted (kept dependency-free
    so a worker never imports the orchestrator's modules)."""
    with socket.create_connection(("127.0.0.1", status_port), timeout=5.0) as sock:
        sock.sendall(b"GET /status HTTP/1.0\r\nHost: status\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    lines = data.decode("latin-1").split("\r\n\r\n", 1)[-1].splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("server accepts"):
            return int(lines[i + 1].split()[0])
    raise OSError("unexpected stub_status answer")


async def _idle_memory(cls: type[Any], job: dict[str, Any]) -> dict[str, Any]:
    """Memory held per keep-alive connection sitting idle in one client's pool, two ways.

    RSS: a client sends one warm-up request (code paths and lazy state loaded), then `n`
    concurrent requests that leave `n` connections idle; the RSS growth divided by the
    connections nginx saw opened. It is an upper bound: what the allocator kept from `n`
    requests in flight counts too. Heap: the same with a second client under tracemalloc,
    which counts the Python allocations still alive once the requests are done: the
    connections' own state only (kernel buffers and C-library allocations excluded).
    """
    n: int = job["connections"]
    url: str = job["urls"][0]
    status_port: int = job["status_port"]

    async def fill(adapter: Any, count: int) -> None:
        for status, _ in await asyncio.gather(*(adapter.get(url) for _ in range(count))):
            if status != 200:
                raise RuntimeError(f"status {status}")

    async def measure(traced: bool) -> tuple[int, int, dict[str, Any]]:
        adapter = cls(job)
        await adapter.open()
        try:
            await fill(adapter, 1)
            gc.collect()
            if traced:
                tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()
            accepted_before = _accepted(status_port)
            await fill(adapter, n)
            accepted_after = _accepted(status_port)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()
            if traced:
                tracemalloc.stop()
            # The warm-up connection (already in the baseline) serves one of the n requests,
            # so n - 1 are new; the second status query is one more accepted connection.
            opened = accepted_after - accepted_before - 1
            return after - before, opened, adapter.info()
        finally:
            await adapter.close()

    rss, held_rss, info = await measure(traced=False)
    await asyncio.sleep(0.2)  # the first client's transports finish closing
    heap, held_heap, _ = await measure(traced=True)
    return {"rss_growth": rss, "rss_connections": held_rss, "heap_growth": heap,
            "heap_connections": held_heap, "connections": n, "info": info,
            "ok": n, "errors": 0, "seconds": 0.0,
            "peak_rss_kib": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}


def run_idle_memory(job: dict[str, Any]) -> dict[str, Any]:
    cls, loop_name = _async_adapter(job["client"])
    return dict(_run_loop(_idle_memory(cls, job), loop_name))


def main() -> None:
    _raise_fd_limit()
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        started = time.perf_counter()
        try:
            answer = run_idle_memory(job) if job["kind"] == "idle-memory" else run_load(job)
        except Exception as exc:
            answer = {"failed": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}
        answer["wall"] = time.perf_counter() - started
        answer["pid"] = os.getpid()  # lets the smoke test check that no worker outlives the run
        out.write(ANSWER + json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

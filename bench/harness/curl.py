"""The pycurl row: libcurl's own concurrency (one CurlMulti) rather than Python threads.

With concurrency 1 it reuses one easy handle, the way a script would; otherwise one multi handle
drives `concurrency` easy handles in a single thread, with libcurl's connection limits set to the
job's (total, and per host where the workload has one). Handles are reused, so their connections
are too.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

from .catalog import POST_PAYLOAD
from .drivers import Tally, result
from .peers import TIMEOUT


class _Counter:
    """A write target that only counts bytes: the streamed workload discards the body."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return len(data)


class _Transfer:
    """One reusable easy handle and where its current response body goes."""

    def __init__(self, pycurl: Any, job: dict[str, Any]) -> None:
        self.pycurl = pycurl
        self.stream = bool(job["stream"])
        self.post = job["method"] == "POST"
        c = self.handle = pycurl.Curl()
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.TIMEOUT_MS, int(TIMEOUT * 1000))
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(TIMEOUT * 1000))
        c.setopt(pycurl.CAINFO, job["ca"])
        c.setopt(pycurl.PROXY, "")  # an empty proxy disables the environment's proxies too
        headers = ["Expect:"]  # no 100-continue round trip before the body
        if self.post:
            headers.append("Content-Type: application/json")
        c.setopt(pycurl.HTTPHEADER, headers)
        self.sink: _Counter | io.BytesIO = _Counter()

    def prepare(self, url: str) -> None:
        c = self.handle
        c.setopt(self.pycurl.URL, url)
        self.sink = _Counter() if self.stream else io.BytesIO()
        c.setopt(self.pycurl.WRITEDATA, self.sink)
        if self.post:
            # Serialised per request, as the libraries with a json= argument do.
            c.setopt(self.pycurl.POSTFIELDS, json.dumps(POST_PAYLOAD).encode())

    def outcome(self) -> tuple[int, int]:
        status = int(self.handle.getinfo(self.pycurl.RESPONSE_CODE))
        sink = self.sink
        n = sink.n if isinstance(sink, _Counter) else len(sink.getvalue())
        return status, n


def run_pycurl(job: dict[str, Any]) -> dict[str, Any]:
    import pycurl

    if job["concurrency"] == 1:
        return _run_easy(pycurl, job)
    return _run_multi(pycurl, job)


def _run_easy(pycurl: Any, job: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = job["urls"]
    expect: int = job["expect_len"]
    total: int = job["requests"]
    t = _Transfer(pycurl, job)
    warm, measured = Tally(), Tally()

    def one(url: str, tally: Tally) -> None:
        t.prepare(url)
        try:
            t.handle.perform()
        except pycurl.error as exc:
            tally.bad(f"pycurl error {exc.args}")
        else:
            status, n = t.outcome()
            tally.good(status, n, expect)

    if job["warmup"]:
        one(urls[0], warm)
    started = time.perf_counter()
    deadline = started + job["time_limit"]
    i = 0
    while i < total and time.perf_counter() < deadline:
        one(urls[i % len(urls)], measured)
        i += 1
    seconds = time.perf_counter() - started
    t.handle.close()
    return result(measured, warm, seconds, i < total)


def _run_multi(pycurl: Any, job: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = job["urls"]
    expect: int = job["expect_len"]
    total: int = job["requests"]
    width: int = job["concurrency"]
    limit: float = job["time_limit"]
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, job["max_connections"])
    multi.setopt(pycurl.M_MAXCONNECTS, job["max_connections"])
    if job["per_host"]:
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, job["per_host"])
    transfers = [_Transfer(pycurl, job) for _ in range(width)]
    by_handle = {id(t.handle): t for t in transfers}

    def phase(count: int, tally: Tally, stop_at: float) -> int:
        """Run `count` requests through the multi handle; returns how many were started."""
        free = list(transfers)
        active = 0
        started = 0
        # A hard stop a little after the deadline, for transfers that neither finish nor fail.
        hard_stop = stop_at + TIMEOUT + 5.0
        while True:
            while free and started < count and time.perf_counter() < stop_at:
                t = free.pop()
                t.prepare(urls[started % len(urls)])
                multi.add_handle(t.handle)
                started += 1
                active += 1
            if active == 0 or time.perf_counter() > hard_stop:
                break
            while True:
                ret, _ = multi.perform()
                if ret != pycurl.E_CALL_MULTI_PERFORM:
                    break
            while True:
                queued, done, failed = multi.info_read()
                for handle in done:
                    t = by_handle[id(handle)]
                    status, n = t.outcome()
                    tally.good(status, n, expect)
                    multi.remove_handle(handle)
                    free.append(t)
                    active -= 1
                for handle, errno, message in failed:
                    tally.bad(f"pycurl error {errno}: {message}")
                    multi.remove_handle(handle)
                    free.append(by_handle[id(handle)])
                    active -= 1
                if not queued:
                    break
            if active:
                multi.select(0.5)
        for _ in range(active):
            tally.bad("transfer still running at the hard stop")
        return started

    warm, measured = Tally(), Tally()
    if job["warmup"]:
        phase(width, warm, time.perf_counter() + limit)
    began = time.perf_counter()
    started = phase(total, measured, began + limit)
    seconds = time.perf_counter() - began
    for t in transfers:
        try:
            multi.remove_handle(t.handle)
        except pycurl.error:
            pass
        t.handle.close()
    multi.close()
    return result(measured, warm, seconds, started < total)

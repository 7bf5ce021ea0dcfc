"""What is measured: the workloads and the client rows, shared by the orchestrator and workers.

Everything here is plain data so that the orchestrator can build jobs and the report can explain
them without importing any HTTP library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# Sync rows use at most this many threads. A Python process with hundreds of threads measures
# the GIL hand-off and the scheduler more than the client, so the sync rows of the 64- and
# 512-way workloads all run 32 threads (sharing one client), capped by the same connection limit.
SYNC_MAX_THREADS = 32

MODES = ("full", "short", "smoke")


# Which rows run which workloads. "main": every HTTP/1.1 workload, run by every row of the main
# suite; "h2": the HTTP/2 workloads, run by their own rows (each client set up for HTTP/2, and
# two HTTP/1.1-over-TLS reference rows), all against nginx's HTTP/2 server block.
SUITES = ("main", "h2")
HTTP2 = "HTTP/2"
HTTP11 = "HTTP/1.1"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    what: str  # one sentence for the report
    server: str  # nginx server block: "plain", "close", "tls", "tls-close", "h2" or "origins"
    path: str
    method: str = "GET"
    concurrency: int = 64
    hosts: int = 1  # >1: requests go round-robin over 127.0.0.1 .. 127.0.0.<hosts>
    per_host: int | None = None  # per-origin connection limit, where one is set
    stream: bool = False  # read the body as a stream of chunks instead of one bytes object
    unit: str = "req/s"  # or "MB/s" (10**6 bytes of response body per second)
    requests: dict[str, int] = field(default_factory=dict)  # per mode
    in_short: bool = False
    headline: bool = False
    suite: str = "main"

    @property
    def max_connections(self) -> int:
        return self.concurrency


SMALL_BODY = b"poolhttp benchmark: a small response body\n"
BODY_16K = 16 * 1024
BODY_1M = 1024 * 1024


def _post_payload() -> dict[str, object]:
    """A JSON object of about 1 KiB, shaped like an API call rather than one long string."""
    items = [{"sku": f"SKU-{i:05d}", "qty": i % 7 + 1, "price": round(9.99 + i, 2)}
             for i in range(16)]
    payload: dict[str, object] = {"order": 12345, "customer": "bench", "items": items}
    pad = 1024 - len(json.dumps(payload))
    payload["note"] = "x" * max(pad - 12, 0)
    return payload


POST_PAYLOAD = _post_payload()
POST_RESPONSE = b'{"ok":true}\n'

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="get-c64", title="Small GET, 64 concurrent, keep-alive",
        what="GET of a small body by 64 tasks (sync rows: 32 threads).",
        server="plain", path="/small", concurrency=64,
        requests={"full": 20000, "short": 4000, "smoke": 128}, in_short=True, headline=True),
    Workload(
        name="get-c1", title="Small GET, one at a time, keep-alive",
        what="GET of a small body, one request at a time over one connection: per-request "
             "latency of the client.",
        server="plain", path="/small", concurrency=1,
        requests={"full": 5000, "short": 1000, "smoke": 30}, in_short=True),
    Workload(
        name="get-c512", title="Small GET, 512 concurrent, keep-alive",
        what="GET of a small body by 512 tasks (sync rows: 32 threads, pycurl: 512 "
             "transfers).",
        server="plain", path="/small", concurrency=512,
        requests={"full": 20000, "short": 6000, "smoke": 512}),
    Workload(
        name="body-16k", title="16 KiB bodies, 64 concurrent",
        what="GET of a 16 KiB file, whole body read into memory; figure is body MB/s.",
        server="plain", path="/16k.bin", concurrency=64, unit="MB/s",
        requests={"full": 15000, "short": 4000, "smoke": 128}),
    Workload(
        name="body-1m", title="1 MiB bodies, 16 concurrent, streamed",
        what="GET of a 1 MiB file, body read to the end as a stream of chunks and discarded; "
             "figure is body MB/s.",
        server="plain", path="/1m.bin", concurrency=16, stream=True, unit="MB/s",
        requests={"full": 1000, "short": 300, "smoke": 32}),
    Workload(
        name="post-1k", title="POST of a 1 KiB JSON body, 64 concurrent",
        what="POST of a ~1 KiB JSON document (serialised by the client on each request), small "
             "JSON reply.",
        server="plain", path="/post", method="POST", concurrency=64,
        requests={"full": 15000, "short": 4000, "smoke": 128}),
    Workload(
        name="origins-20", title="20 origins, 4 connections per host, 80 in all",
        what="GET of a small body round-robin over 20 origins (127.0.0.1 .. 127.0.0.20) by "
             "80 tasks.",
        server="origins", path="/small", concurrency=80, hosts=20, per_host=4,
        requests={"full": 15000, "short": 4000, "smoke": 128}),
    Workload(
        name="newconn", title="New connection per request (server keep-alive off)",
        what="GET of a small body from a server block with keep-alive off: every request pays "
             "for a TCP connect, which is what a pool saves.",
        server="close", path="/small", concurrency=64,
        requests={"full": 4000, "short": 1500, "smoke": 128}),
    Workload(
        name="https", title="HTTPS small GET, 64 concurrent, keep-alive",
        what="GET of a small body over TLS (self-signed CA given to every client), connections "
             "reused.",
        server="tls", path="/small", concurrency=64,
        requests={"full": 15000, "short": 4000, "smoke": 128}),
    # HTTPS with keep-alive off: every request pays for a TCP connect and a TLS handshake,
    # which a client that resumes TLS sessions makes shorter. The block logs each request's
    # $ssl_session_reused, so the report says, from the server's side, who resumed.
    Workload(
        name="https-newconn", title="HTTPS, new connection per request, sequential",
        what="GET of a small body over TLS, one request at a time, from a server block with "
             "keep-alive off (nginx answers `Connection: close`): every request pays for a TCP "
             "connect and a TLS handshake, full or resumed (the block has a session cache and "
             "session tickets).",
        server="tls-close", path="/small", concurrency=1,
        requests={"full": 1500, "short": 400, "smoke": 20}),
    Workload(
        name="https-newconn-c16", title="HTTPS, new connection per request, 16 concurrent",
        what="As https-newconn with 16 tasks (sync rows: 16 threads, pycurl: 16 transfers): "
             "16 handshakes in flight at a time.",
        server="tls-close", path="/small", concurrency=16,
        requests={"full": 3000, "short": 800, "smoke": 32}),
    # HTTP/2 over TLS: one nginx block offering h2 and http/1.1 by ALPN, at most 128 streams per
    # connection (nginx's default). How many connections a client opens for its requests in
    # flight is its own choice, and shows in New conns.
    Workload(
        name="h2-c64", title="HTTP/2: small GET, 64 concurrent",
        what="GET of a small body over HTTP/2 (TLS, ALPN h2) by 64 tasks: the requests "
             "multiplexed over as few connections as the client chooses; the reference rows "
             "use HTTP/1.1 over TLS to the same server block, one connection per request in "
             "flight.",
        server="h2", path="/small", concurrency=64, suite="h2",
        requests={"full": 15000, "short": 4000, "smoke": 128}),
    Workload(
        name="h2-c256", title="HTTP/2: small GET, 256 concurrent",
        what="As h2-c64 with 256 tasks: more requests in flight than nginx's 128 streams per "
             "connection, so a client needs a second connection or a queue.",
        server="h2", path="/small", concurrency=256, suite="h2",
        requests={"full": 20000, "short": 6000, "smoke": 512}),
    Workload(
        name="h2-1m", title="HTTP/2: 1 MiB bodies, 16 concurrent",
        what="GET of a 1 MiB file over HTTP/2 by 16 tasks, whole body read into memory "
             "(HTTP/2 flow control paces each stream and the connection); figure is body MB/s.",
        server="h2", path="/1m.bin", concurrency=16, unit="MB/s", suite="h2",
        requests={"full": 1000, "short": 300, "smoke": 32}),
)

WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}


@dataclass(frozen=True)
class ClientRow:
    key: str
    label: str
    group: str  # "async" (ratio vs poolhttp-asyncio) or "sync" (ratio vs poolhttp-sync)
    model: str  # "tasks", "threads", "multi" (pycurl), "raw-tasks", "raw-threads"
    modules: tuple[str, ...]  # what must be importable for the row to run
    dists: tuple[str, ...]  # distributions whose versions the report lists
    how: str  # one line for the report: how the row uses the library
    baseline: bool = False
    floor: bool = False
    min_python: tuple[int, int] = (3, 10)  # the library has no release for older Pythons
    suite: str = "main"  # the workloads it runs (see SUITES)
    # The protocol the row must have used, checked on every run of a workload that checks it
    # (the HTTP/2 ones): the library's own report of one response, and nginx's log of every
    # request. A row that falls back to another protocol fails.
    protocol: str = HTTP11
    # The only workloads of its suite the row runs (empty: all of them): the rows with TLS
    # session resumption off run the HTTPS workloads only, where it could make a difference.
    workloads: tuple[str, ...] = ()


# The HTTP/1.1-over-TLS workloads: what the rows with TLS session resumption off run.
HTTPS_WORKLOADS = ("https", "https-newconn", "https-newconn-c16")

CLIENTS: tuple[ClientRow, ...] = (
    ClientRow("poolhttp-asyncio", "poolhttp (asyncio)", "async", "tasks", ("poolhttp",),
              ("poolhttp",), "one AsyncClient; Limits(max_connections=C)", baseline=True),
    ClientRow("poolhttp-uvloop", "poolhttp (uvloop)", "async", "tasks", ("poolhttp", "uvloop"),
              ("poolhttp", "uvloop"), "as above, on uvloop"),
    ClientRow("poolhttp-noresume-asyncio", "poolhttp (asyncio, no resumption)", "async",
              "tasks", ("poolhttp",), ("poolhttp",), "as poolhttp (asyncio), with "
              "AsyncClient(tls_resumption=False): every TLS handshake a full one",
              workloads=HTTPS_WORKLOADS),
    ClientRow("poolhttp-noresume-uvloop", "poolhttp (uvloop, no resumption)", "async",
              "tasks", ("poolhttp", "uvloop"), ("poolhttp", "uvloop"),
              "as above, on uvloop", workloads=HTTPS_WORKLOADS),
    ClientRow("aiohttp-asyncio", "aiohttp (asyncio)", "async", "tasks", ("aiohttp",),
              ("aiohttp",), "one ClientSession; TCPConnector(limit=C, limit_per_host)"),
    ClientRow("aiohttp-uvloop", "aiohttp (uvloop)", "async", "tasks", ("aiohttp", "uvloop"),
              ("aiohttp", "uvloop"), "as above, on uvloop"),
    ClientRow("httpx-async", "httpx (async)", "async", "tasks", ("httpx",),
              ("httpx", "httpcore", "h11", "anyio", "sniffio"),
              "one AsyncClient; Limits(max_connections=C, max_keepalive_connections=C)"),
    ClientRow("aiosonic", "aiosonic", "async", "tasks", ("aiosonic",), ("aiosonic",),
              "one HTTPClient; TCPConnector pool of C (4 per origin pool for 20 origins), "
              "no cap on requests per connection"),
    ClientRow("pyreqwest-asyncio", "pyreqwest (asyncio)", "async", "tasks", ("pyreqwest",),
              ("pyreqwest",), "one Client from ClientBuilder().max_connections(C) (requests "
              "in flight, so connections; no per-host limit); client.get(url).build().send()",
              min_python=(3, 11)),
    ClientRow("pyreqwest-uvloop", "pyreqwest (uvloop)", "async", "tasks",
              ("pyreqwest", "uvloop"), ("pyreqwest", "uvloop"), "as above, on uvloop",
              min_python=(3, 11)),
    ClientRow("rnet-asyncio", "rnet (asyncio)", "async", "tasks", ("rnet",), ("rnet",),
              "one Client(pool_max_size=C) (no per-host limit), no impersonation"),
    ClientRow("rnet-uvloop", "rnet (uvloop)", "async", "tasks", ("rnet", "uvloop"),
              ("rnet", "uvloop"), "as above, on uvloop"),
    ClientRow("curl-cffi", "curl_cffi (async)", "async", "tasks", ("curl_cffi",),
              ("curl_cffi", "cffi"), "one AsyncSession(max_clients=C); its CurlMulti's total "
              "(and per-host) connection limits set as for pycurl; no impersonation"),
    ClientRow("raw-asyncio", "raw floor (asyncio)", "async", "raw-tasks", ("httptools",),
              ("httptools",), "asyncio.Protocol + httptools, fixed pre-encoded request, C "
              "connections, no client logic; over TLS the last session is offered to the next "
              "handshake", floor=True),
    ClientRow("raw-uvloop", "raw floor (uvloop)", "async", "raw-tasks", ("httptools", "uvloop"),
              ("httptools", "uvloop"), "as above, on uvloop", floor=True),
    ClientRow("poolhttp-sync", "poolhttp (sync)", "sync", "threads", ("poolhttp",),
              ("poolhttp",), "one Client shared by the threads; Limits(max_connections=C)",
              baseline=True),
    ClientRow("poolhttp-sync-noresume", "poolhttp (sync, no resumption)", "sync", "threads",
              ("poolhttp",), ("poolhttp",), "as poolhttp (sync), with "
              "Client(tls_resumption=False): every TLS handshake a full one",
              workloads=HTTPS_WORKLOADS),
    ClientRow("httpx-sync", "httpx (sync)", "sync", "threads", ("httpx",), ("httpx", "httpcore"),
              "one Client shared by the threads; Limits(max_connections=C)"),
    ClientRow("niquests", "niquests", "sync", "threads", ("niquests",),
              ("niquests", "urllib3-future"), "one Session shared by the threads; "
              "pool_maxsize=C, blocking pool, HTTP/2 and HTTP/3 off"),
    ClientRow("requests", "requests", "sync", "threads", ("requests",), ("requests", "urllib3"),
              "one Session shared by the threads; HTTPAdapter(pool_maxsize=C, pool_block=True)"),
    ClientRow("urllib3", "urllib3", "sync", "threads", ("urllib3",), ("urllib3",),
              "one PoolManager shared by the threads; maxsize=C, block=True"),
    ClientRow("pycurl", "pycurl", "sync", "multi", ("pycurl",), ("pycurl",),
              "C > 1: one CurlMulti running C transfers in one thread, connection limits set; "
              "C = 1: one reused Curl easy handle"),
    ClientRow("pyreqwest-sync", "pyreqwest (blocking)", "sync", "threads", ("pyreqwest",),
              ("pyreqwest",), "one SyncClient shared by the threads; max_connections(C)",
              min_python=(3, 11)),
    ClientRow("httpr", "httpr", "sync", "threads", ("httpr",), ("httpr",),
              "one Client shared by the threads; no pool size setting (the threads bound it)"),
    ClientRow("raw-sync", "raw floor (blocking)", "sync", "raw-threads", ("httptools",),
              ("httptools",), "blocking sockets: sendall + recv_into + httptools, fixed "
              "pre-encoded request, one connection per thread; over TLS the last session is "
              "offered to the next handshake", floor=True),
    # -- the HTTP/2 workloads -----------------------------------------------------------
    ClientRow("poolhttp-h2-asyncio", "poolhttp h2 (asyncio)", "async", "tasks", ("poolhttp",),
              ("poolhttp", "h2"), "one AsyncClient(http2=True); Limits(max_connections=C)",
              baseline=True, suite="h2", protocol=HTTP2),
    ClientRow("poolhttp-h2-uvloop", "poolhttp h2 (uvloop)", "async", "tasks",
              ("poolhttp", "uvloop"), ("poolhttp", "h2", "uvloop"), "as above, on uvloop",
              suite="h2", protocol=HTTP2),
    ClientRow("poolhttp-h1-asyncio", "poolhttp h1 (asyncio)", "async", "tasks", ("poolhttp",),
              ("poolhttp",), "reference: poolhttp's HTTP/1.1 over TLS to the HTTP/2 block; "
              "one AsyncClient (http2 off), Limits(max_connections=C)", suite="h2"),
    ClientRow("aiohttp-h1-asyncio", "aiohttp h1 (asyncio)", "async", "tasks", ("aiohttp",),
              ("aiohttp",), "reference: aiohttp has no HTTP/2; HTTP/1.1 over TLS to the "
              "HTTP/2 block, TCPConnector(limit=C)", suite="h2"),
    ClientRow("httpx-h2", "httpx h2 (async)", "async", "tasks", ("httpx", "h2"),
              ("httpx", "httpcore", "h2", "hpack", "hyperframe"),
              "one AsyncClient(http2=True) (httpcore over h2); Limits(max_connections=C, "
              "max_keepalive_connections=C)", suite="h2", protocol=HTTP2),
    ClientRow("niquests-h2", "niquests h2 (async)", "async", "tasks", ("niquests",),
              ("niquests", "urllib3-future", "jh2"),
              "one AsyncSession (HTTP/3 off, HTTP/2 by ALPN, its default) with an "
              "AsyncHTTPAdapter(pool_maxsize=C, pool_block=True)", suite="h2", protocol=HTTP2),
    ClientRow("pyreqwest-h2-asyncio", "pyreqwest h2 (asyncio)", "async", "tasks",
              ("pyreqwest",), ("pyreqwest",), "one Client from ClientBuilder().http2(True)"
              ".max_connections(C) (h2 by ALPN; the cap is on requests in flight)",
              min_python=(3, 11), suite="h2", protocol=HTTP2),
    ClientRow("pyreqwest-h2-uvloop", "pyreqwest h2 (uvloop)", "async", "tasks",
              ("pyreqwest", "uvloop"), ("pyreqwest", "uvloop"), "as above, on uvloop",
              min_python=(3, 11), suite="h2", protocol=HTTP2),
    ClientRow("curl-cffi-h2", "curl_cffi h2 (async)", "async", "tasks", ("curl_cffi",),
              ("curl_cffi", "cffi"), "one AsyncSession(max_clients=C, http_version=\"v2tls\") "
              "(h2 by ALPN, libcurl multiplexing); its CurlMulti's connection limit C",
              suite="h2", protocol=HTTP2),
)

CLIENTS_BY_KEY = {c.key: c for c in CLIENTS}


def runs_on(client: ClientRow, workload: Workload) -> bool:
    """Whether the row is measured on the workload (each suite has its own rows)."""
    if client.workloads and workload.name not in client.workloads:
        return False
    return client.suite == workload.suite


def checks_protocol(workload: Workload) -> bool:
    """Whether each run verifies the protocol its requests used (the HTTP/2 block logs it)."""
    return workload.server == "h2"


def counts_resumption(workload: Workload) -> bool:
    """Whether nginx logs, for each run, which of its TLS handshakes resumed a session (the
    keep-alive-off TLS block logs `$ssl_session_reused` per request, so per connection)."""
    return workload.server == "tls-close"


def baseline_key(workload: Workload, group: str) -> str | None:
    """The row a group's ratios are against on this workload (poolhttp's), if it has one."""
    return next((c.key for c in CLIENTS
                 if c.baseline and c.group == group and runs_on(c, workload)), None)


def floor_key(workload: Workload, group: str) -> str | None:
    """The raw floor row of the group on this workload (none for HTTP/2)."""
    return next((c.key for c in CLIENTS
                 if c.floor and c.group == group and runs_on(c, workload)), None)


def row_concurrency(client: ClientRow, workload: Workload) -> int:
    """How many tasks, threads or transfers the row runs for the workload."""
    if client.model in ("threads", "raw-threads"):
        return min(workload.concurrency, SYNC_MAX_THREADS)
    return workload.concurrency


def row_concurrency_label(client: ClientRow, workload: Workload) -> str:
    n = row_concurrency(client, workload)
    if client.model in ("threads", "raw-threads"):
        return f"{n} thread{'s' if n > 1 else ''}"
    if client.model == "multi":
        return "easy handle" if n == 1 else f"{n} transfers"
    return f"{n} task{'s' if n > 1 else ''}"


def row_note(client: ClientRow, workload: Workload) -> str:
    """What differs from the workload's nominal setup for this row, if anything."""
    if workload.per_host and client.key in ("httpx-async", "httpx-sync"):
        return "no per-host limit in httpx: total limit only"
    if workload.per_host and client.key.startswith("pyreqwest"):
        return "no per-host limit in pyreqwest: total limit only"
    if workload.per_host and client.key.startswith("rnet"):
        return "no per-host limit in rnet: total limit only"
    if workload.per_host and client.key in ("requests", "urllib3", "niquests"):
        return "per-host pools of 4; no total limit (the threads bound it)"
    if workload.per_host and client.key == "httpr":
        return "no connection limits in httpr (the threads bound them)"
    if workload.per_host and client.model == "raw-tasks":
        return "4 fixed connections per origin"
    if workload.per_host and client.model == "raw-threads":
        return "one fixed connection per thread, origins dealt out in turn"
    if client.suite == "h2" and client.protocol == HTTP11:
        return "HTTP/1.1 reference: one connection per request in flight"
    if client.key == "niquests-h2":
        return ("niquests opens a new connection (each one h2) for a request while its pool "
                "has room: up to one per request in flight")
    if client.key == "curl-cffi-h2":
        return "libcurl: at most 100 streams per connection (its default), PIPEWAIT on"
    if (workload.server == "tls-close" and workload.concurrency > 1
            and client.key == "pycurl"):
        return ("libcurl's session cache (its multi handle's) keeps at most 2 TLS 1.3 tickets "
                "per host and uses each once: few of the handshakes in flight find one")
    return ""

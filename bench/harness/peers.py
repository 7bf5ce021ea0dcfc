"""One adapter per client library: idiomatic use of its public API, set to the job's limits.

Every adapter builds one long-lived client (session, pool manager...) with its connection limit
set to the job's `max_connections` (and the per-origin limit where the library has one), keeps
connections alive, never retries, never reads proxies from the environment, and offers the same
three calls: `get` (whole body into memory), `post` (the JSON payload, serialised by the library),
and `stream` (body read to the end in chunks and discarded). Each returns (status, body bytes).

The adapters of the HTTP/2 workloads' rows also have `protocol(url)`: one more GET, after the
measured phase, returning the protocol the library says the response came over ("HTTP/2",
"HTTP/1.1"), which the worker checks against the row's.
"""

from __future__ import annotations

import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

from .catalog import POST_PAYLOAD

TIMEOUT = 10.0  # seconds, for every phase of every request; loopback answers in microseconds
CHUNK = 64 * 1024  # for the libraries that ask the caller for a chunk size


def _tls_context(job: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=job["ca"])


def protocol_name(version: str) -> str:
    """A library's spelling of an HTTP version, normalised: "HTTP/2.0" -> "HTTP/2"."""
    text = version.strip().upper()
    if text in ("H2", "HTTP/2", "HTTP/2.0"):
        return "HTTP/2"
    if text in ("H3", "HTTP/3", "HTTP/3.0"):
        return "HTTP/3"
    return text


def _per_host_or_total(job: dict[str, Any]) -> int:
    """The size of a per-origin pool, for libraries that only have per-origin pools."""
    per_host: int | None = job["per_host"]
    return per_host if per_host else int(job["max_connections"])


# -- async ---------------------------------------------------------------------------------
def _poolhttp_info(client: Any) -> dict[str, Any]:
    s = client.stats()
    info: dict[str, Any] = {"pool": {"created": s.created, "reused": s.reused,
                                     "closed": s.closed, "connections": s.connections,
                                     "idle": s.idle}}
    if hasattr(s, "tls_resumed"):
        info["tls_resumed"] = s.tls_resumed  # handshakes that resumed, by poolhttp's count
    return info


def _poolhttp_options(resumption: bool) -> dict[str, Any]:
    """TLS session resumption is on by default: the default rows pass nothing, so that they
    measure the default; the rows with it off pass `tls_resumption=False`."""
    return {} if resumption else {"tls_resumption": False}


class PoolhttpAsync:
    resumption = True  # TLS session resumption (poolhttp's default)

    def __init__(self, job: dict[str, Any]) -> None:
        import poolhttp

        self.client = poolhttp.AsyncClient(
            limits=poolhttp.Limits(max_connections=job["max_connections"],
                                   max_connections_per_host=job["per_host"]),
            timeout=poolhttp.Timeout(TIMEOUT), verify=job["ca"],
            **_poolhttp_options(self.resumption))

    async def open(self) -> None:
        pass

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.client.get(url)
        return response.status_code, len(response.content)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.client.post(url, json=POST_PAYLOAD)
        return response.status_code, len(response.content)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                n += len(chunk)
        return response.status_code, n

    async def close(self) -> None:
        await self.client.aclose()

    async def protocol(self, url: str) -> str:
        response = await self.client.get(url)
        return protocol_name(response.http_version)

    def info(self) -> dict[str, Any]:
        return _poolhttp_info(self.client)


class PoolhttpNoResumeAsync(PoolhttpAsync):
    """poolhttp's AsyncClient with `tls_resumption=False`: a full TLS handshake every time."""

    resumption = False


class PoolhttpH2Async(PoolhttpAsync):
    """poolhttp with HTTP/2: `AsyncClient(http2=True)`, h2 offered by ALPN."""

    def __init__(self, job: dict[str, Any]) -> None:
        import poolhttp

        try:
            self.client = poolhttp.AsyncClient(
                http2=True,
                limits=poolhttp.Limits(max_connections=job["max_connections"],
                                       max_connections_per_host=job["per_host"]),
                timeout=poolhttp.Timeout(TIMEOUT), verify=job["ca"])
        except TypeError as exc:
            if "http2" not in str(exc):
                raise
            raise TypeError(f"this poolhttp has no HTTP/2 yet: AsyncClient(http2=True) "
                            f"raised TypeError: {exc}") from exc


class AiohttpAsync:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.session: Any = None

    async def open(self) -> None:
        import aiohttp

        # The session must be created inside the running loop.
        connector = aiohttp.TCPConnector(limit=self.job["max_connections"],
                                         limit_per_host=self.job["per_host"] or 0,
                                         ssl=_tls_context(self.job))
        self.session = aiohttp.ClientSession(connector=connector,
                                             timeout=aiohttp.ClientTimeout(total=TIMEOUT))

    async def get(self, url: str) -> tuple[int, int]:
        async with self.session.get(url) as response:
            body = await response.read()
            return response.status, len(body)

    async def post(self, url: str) -> tuple[int, int]:
        async with self.session.post(url, json=POST_PAYLOAD) as response:
            body = await response.read()
            return response.status, len(body)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.session.get(url) as response:
            # iter_any: chunks as they arrive, without re-slicing them to a fixed size.
            async for chunk in response.content.iter_any():
                n += len(chunk)
            return response.status, n

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def protocol(self, url: str) -> str:
        async with self.session.get(url) as response:
            await response.read()
            version = response.version
            return protocol_name(f"HTTP/{version.major}.{version.minor}")

    def info(self) -> dict[str, Any]:
        return {}


class HttpxAsync:
    http2 = False

    def __init__(self, job: dict[str, Any]) -> None:
        import httpx

        limit = job["max_connections"]
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=TIMEOUT, verify=_tls_context(job), trust_env=False, http2=self.http2)

    async def open(self) -> None:
        pass

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.client.get(url)
        return response.status_code, len(response.content)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.client.post(url, json=POST_PAYLOAD)
        return response.status_code, len(response.content)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                n += len(chunk)
        return response.status_code, n

    async def close(self) -> None:
        await self.client.aclose()

    async def protocol(self, url: str) -> str:
        response = await self.client.get(url)
        return protocol_name(response.http_version)

    def info(self) -> dict[str, Any]:
        return {}


class HttpxH2Async(HttpxAsync):
    """httpx with `http2=True` (httpcore's HTTP/2 over the h2 package; h2 offered by ALPN)."""

    http2 = True


class NiquestsH2Async:
    """niquests' AsyncSession, which offers h2 (and http/1.1) by ALPN by default over TLS; HTTP/3
    is turned off (nginx here does not offer it; off, no Alt-Svc probing can interfere)."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.session: Any = None

    async def open(self) -> None:
        import niquests
        import niquests.adapters

        job = self.job
        self.session = niquests.AsyncSession(disable_http3=True)
        # As for the sync niquests row: one origin, a blocking pool of C connections (a cap;
        # with HTTP/2 the pool multiplexes requests over the connections it has).
        adapter = niquests.adapters.AsyncHTTPAdapter(
            pool_connections=max(job["hosts"], 1), pool_maxsize=_per_host_or_total(job),
            pool_block=True, max_retries=0, disable_http3=True)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.verify = job["ca"]
        self.session.trust_env = False

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.session.get(url, timeout=TIMEOUT)
        return response.status_code, len(response.content)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.session.post(url, json=POST_PAYLOAD, timeout=TIMEOUT)
        return response.status_code, len(response.content)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        response = await self.session.get(url, stream=True, timeout=TIMEOUT)
        async for chunk in await response.iter_content(chunk_size=CHUNK):
            n += len(chunk)
        await response.close()
        return response.status_code, n

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def protocol(self, url: str) -> str:
        response = await self.session.get(url, timeout=TIMEOUT)
        # An int: 11, 20 or 30 (urllib3-future's HttpVersion).
        version = response.http_version
        return {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2", 30: "HTTP/3"}.get(
            version or 0, f"unknown ({version!r})")

    def info(self) -> dict[str, Any]:
        return {}


class AiosonicAsync:
    def __init__(self, job: dict[str, Any]) -> None:
        from aiosonic import HTTPClient
        from aiosonic.connectors import TCPConnector
        from aiosonic.pools import PoolConfig
        from aiosonic.timeout import Timeouts

        # aiosonic recycles a connection after 1000 requests by default; every other client
        # keeps it as long as the server does, so lift that for a like-for-like comparison.
        configs: dict[str, Any] = {
            ":default": PoolConfig(size=job["max_connections"], max_conn_requests=None)}
        if job["per_host"]:
            for url in job["urls"]:
                origin = url.split("/")[2].rsplit(":", 1)[0]
                scheme = url.split(":", 1)[0]
                configs[f"{scheme}://{origin}"] = PoolConfig(size=job["per_host"],
                                                             max_conn_requests=None)
        timeouts = Timeouts(sock_connect=TIMEOUT, sock_read=TIMEOUT, pool_acquire=TIMEOUT,
                            request_timeout=TIMEOUT)
        self.client = HTTPClient(connector=TCPConnector(pool_configs=configs, timeouts=timeouts))
        self.tls = _tls_context(job) if job["urls"][0].startswith("https:") else None

    async def open(self) -> None:
        pass

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.client.get(url, ssl=self.tls)
        body = await response.content()
        return response.status_code, len(body)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.client.post(url, json=POST_PAYLOAD, ssl=self.tls)
        body = await response.content()
        return response.status_code, len(body)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.client.stream("GET", url, ssl=self.tls) as response:
            async for chunk in response.iter_bytes():
                n += len(chunk)
            return response.status_code, n

    async def close(self) -> None:
        await self.client.aclose()

    def info(self) -> dict[str, Any]:
        return {}


class PyreqwestAsync:
    """pyreqwest: reqwest (hyper, tokio) behind a request-builder API; JSON and body in Rust."""

    http2 = False

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.ca_pem = Path(job["ca"]).read_bytes()
        self.client: Any = None

    async def open(self) -> None:
        from pyreqwest.client import ClientBuilder

        # Built inside the running loop, which its futures complete on. max_connections caps
        # the requests in flight, and so the connections (reqwest has no per-host limit).
        builder = (ClientBuilder()
                   .max_connections(self.job["max_connections"])
                   .timeout(timedelta(seconds=TIMEOUT))
                   .connect_timeout(timedelta(seconds=TIMEOUT))
                   .add_root_certificate_pem(self.ca_pem)
                   .no_proxy())
        if self.http2:
            # HTTP/2 is off by default (reqwest's opt-in feature); on, it is offered by ALPN.
            builder = builder.http2(True)
        self.client = builder.build()

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.client.get(url).build().send()
        body = await response.bytes()
        return response.status, len(body)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.client.post(url).body_json(POST_PAYLOAD).build().send()
        body = await response.bytes()
        return response.status, len(body)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.client.get(url).build_streamed() as response:
            reader = response.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                n += len(chunk)
            return response.status, n

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def protocol(self, url: str) -> str:
        response = await self.client.get(url).build().send()
        await response.bytes()
        return protocol_name(response.version)  # "HTTP/1.1", "HTTP/2.0"

    def info(self) -> dict[str, Any]:
        return {}


class PyreqwestH2Async(PyreqwestAsync):
    """pyreqwest with `.http2(True)` on its builder: h2 offered by ALPN (hyper's HTTP/2)."""

    http2 = True


class RnetAsync:
    """rnet: an asyncio client over wreq (a reqwest fork); no browser impersonation asked."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.client: Any = None

    async def open(self) -> None:
        import rnet

        seconds = int(TIMEOUT)
        # pool_max_size: the pool's total connections (rnet has no per-host cap, only one on
        # idle connections per host, which would close and reopen them instead).
        self.client = rnet.Client(timeout=seconds, connect_timeout=seconds,
                                  read_timeout=seconds,
                                  pool_max_size=self.job["max_connections"],
                                  verify=Path(self.job["ca"]), no_proxy=True)

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.client.get(url)
        body = await response.bytes()
        return response.status, len(body)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.client.post(url, json=POST_PAYLOAD)
        body = await response.bytes()
        return response.status, len(body)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        response = await self.client.get(url)
        async with response.stream() as chunks:
            async for chunk in chunks:
                n += len(chunk)
        return response.status, n

    async def close(self) -> None:
        self.client = None  # rnet's Client has no close(): its pool goes with the object

    def info(self) -> dict[str, Any]:
        return {}


class CurlCffiAsync:
    """curl_cffi's AsyncSession: libcurl's multi interface driven by the asyncio loop."""

    http_version: str | None = None  # libcurl's default

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.session: Any = None

    async def open(self) -> None:
        from curl_cffi import CurlMOpt, CurlOpt
        from curl_cffi.requests import AsyncSession

        limit = self.job["max_connections"]
        # max_clients: the easy handles, so the transfers in flight; the multi handle's
        # connection limits are set as for the pycurl row.
        extra: dict[str, Any] = {}
        if self.http_version:
            # PIPEWAIT: a transfer waits for a connection that is being set up, to learn
            # whether it can multiplex over it, rather than open one more (libcurl's default
            # is to open one; curl's own --parallel sets this too).
            extra = {"http_version": self.http_version,
                     "curl_options": {CurlOpt.PIPEWAIT: 1}}
        self.session = AsyncSession(max_clients=limit, timeout=TIMEOUT, verify=self.job["ca"],
                                    trust_env=False, **extra)
        multi = self.session.acurl
        multi.setopt(CurlMOpt.MAX_TOTAL_CONNECTIONS, limit)
        multi.setopt(CurlMOpt.MAXCONNECTS, limit)
        if self.job["per_host"]:
            multi.setopt(CurlMOpt.MAX_HOST_CONNECTIONS, self.job["per_host"])

    async def get(self, url: str) -> tuple[int, int]:
        response = await self.session.get(url)
        return response.status_code, len(response.content)

    async def post(self, url: str) -> tuple[int, int]:
        response = await self.session.post(url, json=POST_PAYLOAD)
        return response.status_code, len(response.content)

    async def stream(self, url: str) -> tuple[int, int]:
        n = 0
        async with self.session.stream("GET", url) as response:
            async for chunk in response.aiter_content():
                n += len(chunk)
        return response.status_code, n

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def protocol(self, url: str) -> str:
        from curl_cffi import CurlHttpVersion

        response = await self.session.get(url)
        # libcurl's CURLINFO_HTTP_VERSION: its CURL_HTTP_VERSION_* numbers.
        names = {CurlHttpVersion.V1_0: "HTTP/1.0", CurlHttpVersion.V1_1: "HTTP/1.1",
                 CurlHttpVersion.V2_0: "HTTP/2", CurlHttpVersion.V3: "HTTP/3"}
        return names.get(response.http_version, f"unknown ({response.http_version!r})")

    def info(self) -> dict[str, Any]:
        return {}


class CurlCffiH2Async(CurlCffiAsync):
    """curl_cffi over HTTP/2: http_version "v2tls" (libcurl's CURL_HTTP_VERSION_2TLS: h2 by
    ALPN over TLS, HTTP/1.1 for plain http), libcurl multiplexing streams over a connection
    (up to its own default of 100 per connection), PIPEWAIT on."""

    http_version = "v2tls"


# Keyed by row key, or by the part before the loop ("poolhttp" for poolhttp-uvloop).
ASYNC_ADAPTERS: dict[str, type[Any]] = {
    "poolhttp": PoolhttpAsync,
    "poolhttp-noresume": PoolhttpNoResumeAsync,
    "aiohttp": AiohttpAsync,
    "httpx-async": HttpxAsync,
    "aiosonic": AiosonicAsync,
    "pyreqwest": PyreqwestAsync,
    "rnet": RnetAsync,
    "curl-cffi": CurlCffiAsync,
    # The HTTP/2 workloads' rows (and their HTTP/1.1 references, the usual adapters).
    "poolhttp-h2": PoolhttpH2Async,
    "poolhttp-h1": PoolhttpAsync,
    "aiohttp-h1": AiohttpAsync,
    "httpx-h2": HttpxH2Async,
    "niquests-h2": NiquestsH2Async,
    "pyreqwest-h2": PyreqwestH2Async,
    "curl-cffi-h2": CurlCffiH2Async,
}


# -- sync ----------------------------------------------------------------------------------
class _HttpxShapedSync:
    """The blocking clients whose calls have httpx's shape (poolhttp, httpx, httpr): the
    workloads' calls, once; each subclass makes `self.client`."""

    client: Any

    def get(self, url: str) -> tuple[int, int]:
        response = self.client.get(url)
        return response.status_code, len(response.content)

    def post(self, url: str) -> tuple[int, int]:
        response = self.client.post(url, json=POST_PAYLOAD)
        return response.status_code, len(response.content)

    def stream(self, url: str) -> tuple[int, int]:
        n = 0
        with self.client.stream("GET", url) as response:
            for chunk in response.iter_bytes():
                n += len(chunk)
        return response.status_code, n

    def close(self) -> None:
        self.client.close()

    def info(self) -> dict[str, Any]:
        return {}


class PoolhttpSync(_HttpxShapedSync):
    resumption = True  # TLS session resumption (poolhttp's default)

    def __init__(self, job: dict[str, Any]) -> None:
        import poolhttp

        if not hasattr(poolhttp, "Client"):
            raise RuntimeError("poolhttp.Client does not exist in this build of poolhttp")
        self.client = poolhttp.Client(
            limits=poolhttp.Limits(max_connections=job["max_connections"],
                                   max_connections_per_host=job["per_host"]),
            timeout=poolhttp.Timeout(TIMEOUT), verify=job["ca"],
            **_poolhttp_options(self.resumption))

    def info(self) -> dict[str, Any]:
        return _poolhttp_info(self.client)


class PoolhttpNoResumeSync(PoolhttpSync):
    """poolhttp's Client with `tls_resumption=False`: a full TLS handshake every time."""

    resumption = False


class HttpxSync(_HttpxShapedSync):
    def __init__(self, job: dict[str, Any]) -> None:
        import httpx

        limit = job["max_connections"]
        self.client = httpx.Client(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=TIMEOUT, verify=_tls_context(job), trust_env=False)



class _RequestsLike:
    """requests and niquests share an API: one Session, a mounted adapter, stream=True."""

    session: Any

    def get(self, url: str) -> tuple[int, int]:
        response = self.session.get(url, timeout=TIMEOUT)
        return response.status_code, len(response.content)

    def post(self, url: str) -> tuple[int, int]:
        response = self.session.post(url, json=POST_PAYLOAD, timeout=TIMEOUT)
        return response.status_code, len(response.content)

    def stream(self, url: str) -> tuple[int, int]:
        n = 0
        with self.session.get(url, stream=True, timeout=TIMEOUT) as response:
            for chunk in response.iter_content(chunk_size=CHUNK):
                n += len(chunk)
            return response.status_code, n

    def close(self) -> None:
        self.session.close()

    def info(self) -> dict[str, Any]:
        return {}


class RequestsSync(_RequestsLike):
    def __init__(self, job: dict[str, Any]) -> None:
        import requests
        import requests.adapters

        self.session = requests.Session()
        # pool_maxsize is per origin; pool_block keeps it a hard limit instead of opening (and
        # then discarding) extra connections when all are busy.
        adapter = requests.adapters.HTTPAdapter(pool_connections=max(job["hosts"], 1),
                                                pool_maxsize=_per_host_or_total(job),
                                                pool_block=True, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.verify = job["ca"]
        self.session.trust_env = False


class NiquestsSync(_RequestsLike):
    def __init__(self, job: dict[str, Any]) -> None:
        import niquests
        import niquests.adapters

        self.session = niquests.Session(disable_http2=True, disable_http3=True)
        # As for requests; HTTP/2 and HTTP/3 off so that every client speaks HTTP/1.1.
        adapter = niquests.adapters.HTTPAdapter(pool_connections=max(job["hosts"], 1),
                                                pool_maxsize=_per_host_or_total(job),
                                                pool_block=True, max_retries=0,
                                                disable_http2=True, disable_http3=True)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.verify = job["ca"]
        self.session.trust_env = False


class Urllib3Sync:
    def __init__(self, job: dict[str, Any]) -> None:
        import urllib3

        self.pool = urllib3.PoolManager(num_pools=max(job["hosts"], 1),
                                        maxsize=_per_host_or_total(job), block=True,
                                        retries=False, timeout=urllib3.Timeout(TIMEOUT),
                                        cert_reqs="CERT_REQUIRED", ca_certs=job["ca"])

    def get(self, url: str) -> tuple[int, int]:
        response = self.pool.request("GET", url)
        return response.status, len(response.data)

    def post(self, url: str) -> tuple[int, int]:
        response = self.pool.request("POST", url, json=POST_PAYLOAD)
        return response.status, len(response.data)

    def stream(self, url: str) -> tuple[int, int]:
        n = 0
        response = self.pool.request("GET", url, preload_content=False)
        try:
            for chunk in response.stream(CHUNK):
                n += len(chunk)
        finally:
            response.release_conn()
        return response.status, n

    def close(self) -> None:
        self.pool.clear()

    def info(self) -> dict[str, Any]:
        return {}


class PyreqwestSync:
    """pyreqwest's blocking SyncClient, shared by the threads."""

    def __init__(self, job: dict[str, Any]) -> None:
        from pyreqwest.client import SyncClientBuilder

        self.client = (SyncClientBuilder()
                       .max_connections(job["max_connections"])
                       .timeout(timedelta(seconds=TIMEOUT))
                       .connect_timeout(timedelta(seconds=TIMEOUT))
                       .add_root_certificate_pem(Path(job["ca"]).read_bytes())
                       .no_proxy()
                       .build())

    def get(self, url: str) -> tuple[int, int]:
        response = self.client.get(url).build().send()
        return response.status, len(response.bytes())

    def post(self, url: str) -> tuple[int, int]:
        response = self.client.post(url).body_json(POST_PAYLOAD).build().send()
        return response.status, len(response.bytes())

    def stream(self, url: str) -> tuple[int, int]:
        n = 0
        with self.client.get(url).build_streamed() as response:
            reader = response.body_reader
            while (chunk := reader.read_chunk()) is not None:
                n += len(chunk)
            return response.status, n

    def close(self) -> None:
        self.client.close()

    def info(self) -> dict[str, Any]:
        return {}


class HttprSync(_HttpxShapedSync):
    """httpr's blocking Client (reqwest underneath), shared by the threads. It has no setting
    for the pool's size: the threads bound the connections."""

    def __init__(self, job: dict[str, Any]) -> None:
        import httpr

        self.client = httpr.Client(timeout=TIMEOUT, ca_cert_file=job["ca"])



SYNC_ADAPTERS: dict[str, type[Any]] = {
    "poolhttp-sync": PoolhttpSync,
    "poolhttp-sync-noresume": PoolhttpNoResumeSync,
    "httpx-sync": HttpxSync,
    "niquests": NiquestsSync,
    "requests": RequestsSync,
    "urllib3": Urllib3Sync,
    "pyreqwest-sync": PyreqwestSync,
    "httpr": HttprSync,
}

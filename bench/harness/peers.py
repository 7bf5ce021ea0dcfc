"""One adapter per client library: idiomatic use of its public API, set to the job's limits.

Every adapter builds one long-lived client (session, pool manager...) with its connection limit
set to the job's `max_connections` (and the per-origin limit where the library has one), keeps
connections alive, never retries, never reads proxies from the environment, and offers the same
three calls: `get` (whole body into memory), `post` (the JSON payload, serialised by the library),
and `stream` (body read to the end in chunks and discarded). Each returns (status, body bytes).
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


def _per_host_or_total(job: dict[str, Any]) -> int:
    """The size of a per-origin pool, for libraries that only have per-origin pools."""
    per_host: int | None = job["per_host"]
    return per_host if per_host else int(job["max_connections"])


# -- async ---------------------------------------------------------------------------------
class PoolhttpAsync:
    def __init__(self, job: dict[str, Any]) -> None:
        import poolhttp

        self.client = poolhttp.AsyncClient(
            limits=poolhttp.Limits(max_connections=job["max_connections"],
                                   max_connections_per_host=job["per_host"]),
            timeout=poolhttp.Timeout(TIMEOUT), verify=job["ca"])

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

    def info(self) -> dict[str, Any]:
        s = self.client.stats()
        return {"pool": {"created": s.created, "reused": s.reused, "closed": s.closed,
                         "connections": s.connections, "idle": s.idle}}


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

    def info(self) -> dict[str, Any]:
        return {}


class HttpxAsync:
    def __init__(self, job: dict[str, Any]) -> None:
        import httpx

        limit = job["max_connections"]
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=TIMEOUT, verify=_tls_context(job), trust_env=False)

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

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.ca_pem = Path(job["ca"]).read_bytes()
        self.client: Any = None

    async def open(self) -> None:
        from pyreqwest.client import ClientBuilder

        # Built inside the running loop, which its futures complete on. max_connections caps
        # the requests in flight, and so the connections (reqwest has no per-host limit).
        self.client = (ClientBuilder()
                       .max_connections(self.job["max_connections"])
                       .timeout(timedelta(seconds=TIMEOUT))
                       .connect_timeout(timedelta(seconds=TIMEOUT))
                       .add_root_certificate_pem(self.ca_pem)
                       .no_proxy()
                       .build())

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

    def info(self) -> dict[str, Any]:
        return {}


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

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.session: Any = None

    async def open(self) -> None:
        from curl_cffi import CurlMOpt
        from curl_cffi.requests import AsyncSession

        limit = self.job["max_connections"]
        # max_clients: the easy handles, so the transfers in flight; the multi handle's
        # connection limits are set as for the pycurl row.
        self.session = AsyncSession(max_clients=limit, timeout=TIMEOUT, verify=self.job["ca"],
                                    trust_env=False)
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

    def info(self) -> dict[str, Any]:
        return {}


ASYNC_ADAPTERS: dict[str, type[Any]] = {
    "poolhttp": PoolhttpAsync,
    "aiohttp": AiohttpAsync,
    "httpx-async": HttpxAsync,
    "aiosonic": AiosonicAsync,
    "pyreqwest": PyreqwestAsync,
    "rnet": RnetAsync,
    "curl-cffi": CurlCffiAsync,
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
    def __init__(self, job: dict[str, Any]) -> None:
        import poolhttp

        if not hasattr(poolhttp, "Client"):
            raise RuntimeError("poolhttp.Client does not exist in this build of poolhttp")
        self.client = poolhttp.Client(
            limits=poolhttp.Limits(max_connections=job["max_connections"],
                                   max_connections_per_host=job["per_host"]),
            timeout=poolhttp.Timeout(TIMEOUT), verify=job["ca"])


    def info(self) -> dict[str, Any]:
        s = self.client.stats()
        return {"pool": {"created": s.created, "reused": s.reused, "closed": s.closed,
                         "connections": s.connections, "idle": s.idle}}


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
    "httpx-sync": HttpxSync,
    "niquests": NiquestsSync,
    "requests": RequestsSync,
    "urllib3": Urllib3Sync,
    "pyreqwest-sync": PyreqwestSync,
    "httpr": HttprSync,
}

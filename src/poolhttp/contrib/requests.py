"""A requests transport adapter that carries a `requests.Session`'s requests over poolhttp.

    import requests
    from urllib3.util import Retry
    from poolhttp.contrib.requests import PoolAdapter

    session = requests.Session()
    adapter = PoolAdapter(pool_maxsize=32, max_retries=Retry(total=3, backoff_factor=0.5,
                                                             status_forcelist=[502, 503]))
    session.mount("https://", adapter)
    session.mount("http://", adapter)

requests keeps everything above the adapter: preparing the request, redirects, cookies, auth,
hooks, environment settings and decoding the text. The adapter sends the prepared request as
requests built it, over one `poolhttp.Client` (one pool); a request through a proxy, or with
`verify=` / `cert=` other than the adapter's first, goes over a client of its own, which the
adapter keeps for the next request with the same settings. `close()` closes them all.

Errors are requests' own exception types (`requests.ConnectionError`, `ConnectTimeout`,
`ReadTimeout`, `SSLError`, `ProxyError`, `RetryError`, `ChunkedEncodingError`, ...), each
chained (`__cause__`) to the poolhttp error it stands for, which is also its first argument,
as HTTPAdapter's are to urllib3's.

This module imports requests and urllib3; `poolhttp` and `poolhttp.contrib` never import it.
"""

from __future__ import annotations

import io
import os
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.cookies import extract_cookies_to_jar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_encoding_from_headers,
    prepend_scheme_if_needed,
    select_proxy,
)
from urllib3.util import parse_url as urllib3_parse_url

from .._config import Limits, Retry, Timeout, TimeoutTypes
from .._decoders import ByteChunker, ContentDecoder, make_decoder
from .._exceptions import (
    ConnectError,
    ConnectTimeout,
    DecodingError,
    HTTPError,
    HTTPStatusError,
    InvalidRequest,
    InvalidURL,
    PoolClosed,
    PoolTimeout,
    ProxyError,
    ReadTimeout,
    RetryError,
    TimeoutException,
    TransportError,
    WriteTimeout,
)
from .._headers import encode_header_pairs
from .._models import Request, Response, check_method
from .._proxy import Proxy
from .._sync.client import Client
from .._urls import URL, parse_url

__all__ = ["PoolAdapter", "PoolRawResponse", "RetryNotMappable", "to_pool_retry"]

# -- retries ---------------------------------------------------------------------------------
# urllib3.Retry(allowed_methods=None) retries any method; poolhttp's Retry holds a set of
# names, so None becomes every method of the HTTP registry a program is likely to send.
_ANY_METHOD = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                         "CONNECT"})
# Fields of urllib3.Retry that do not matter under a requests adapter: requests follows the
# redirects itself, and HTTPAdapter too tells urllib3 not to (`redirect=False`).
_REDIRECT_FIELDS = frozenset({"redirect", "raise_on_redirect", "remove_headers_on_redirect"})
_MAPPED_FIELDS = frozenset({"total", "connect", "read", "status", "other", "allowed_methods",
                            "status_forcelist", "backoff_factor", "backoff_max",
                            "backoff_jitter", "respect_retry_after_header", "retry_after_max",
                            "raise_on_status", "history"})
# The methods a subclass of urllib3.Retry overrides to change how retries are decided; such
# a policy is code, which poolhttp's Retry (values) cannot carry.
_DECIDING_METHODS = ("new", "increment", "is_retry", "is_exhausted", "sleep",
                     "sleep_for_retry", "get_backoff_time", "parse_retry_after",
                     "get_retry_after", "_is_method_retryable", "_is_connection_error",
                     "_is_read_error")


class RetryNotMappable(ValueError):
    """A `max_retries` setting that poolhttp's `Retry` cannot express; `field` names it
    (a field of urllib3's Retry, or the method a subclass overrides)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"max_retries: urllib3 Retry.{field} cannot be mapped onto "
                         f"poolhttp.Retry: {detail}")
        self.field = field


def _count(name: str, value: object) -> int | None:
    """A urllib3 retry count as poolhttp's: False (no retry, raise at once) is 0."""
    if value is None:
        return None
    if value is False:
        return 0
    if value is True or not isinstance(value, int):
        raise RetryNotMappable(name, f"expected an int, None or False, got {value!r}")
    if value < 0:
        raise RetryNotMappable(name, f"a negative count ({value}) is a spent policy")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RetryNotMappable(name, f"expected a number of seconds >= 0, got {value!r}")
    return float(value)


def to_pool_retry(value: object) -> Retry:
    """`max_retries` as poolhttp's Retry: an int (urllib3's `Retry.from_int`, as HTTPAdapter
    reads it), a `urllib3.util.Retry`, a `poolhttp.Retry` (kept), or None (no retries).
    Raises `RetryNotMappable` naming the field poolhttp cannot express, TypeError for
    anything else.

    >>> from urllib3.util import Retry as U
    >>> to_pool_retry(U(total=3, status_forcelist=[503], backoff_factor=0.1)).status_forcelist
    frozenset({503})
    >>> try:
    ...     to_pool_retry(U(other=2))
    ... except RetryNotMappable as exc:
    ...     print(exc.field)
    other
    """
    if isinstance(value, Retry):
        return value
    if value is None:
        return Retry(total=0)
    if isinstance(value, bool) or not isinstance(value, (int, urllib3.util.Retry)):
        raise TypeError(f"max_retries must be an int, a urllib3.util.Retry or a poolhttp.Retry, "
                        f"not {type(value).__name__}")
    policy = urllib3.util.Retry.from_int(value) if isinstance(value, int) else value
    for method in _DECIDING_METHODS:
        mine = getattr(type(policy), method, None)
        if mine is not None and mine is not getattr(urllib3.util.Retry, method, None):
            raise RetryNotMappable(method, f"{type(policy).__name__} overrides it, and a "
                                   "policy written as code cannot be carried over")
    defaults = vars(urllib3.util.Retry())
    for name, given in vars(policy).items():
        if name not in _MAPPED_FIELDS and name not in _REDIRECT_FIELDS \
                and given != defaults.get(name, given):
            raise RetryNotMappable(name, "poolhttp.Retry has no such setting")
    if policy.other is not None:
        raise RetryNotMappable("other", "poolhttp counts every error as a connect or a read "
                               "error; leave other=None")
    if policy.history:
        raise RetryNotMappable("history", "the policy was already used; pass a fresh one")
    methods = policy.allowed_methods
    if methods is not None and (isinstance(methods, (str, bytes))
                                or not isinstance(methods, Iterable)):
        raise RetryNotMappable("allowed_methods", f"expected a collection of method names, "
                               f"got {methods!r}")
    statuses = policy.status_forcelist
    if statuses is not None and not (isinstance(statuses, Iterable)
                                     and all(isinstance(s, int) for s in statuses)):
        raise RetryNotMappable("status_forcelist", f"expected a collection of int statuses, "
                               f"got {statuses!r}")
    options: dict[str, Any] = {
        "total": _count("total", policy.total),
        "connect": _count("connect", policy.connect),
        "read": _count("read", policy.read),
        "status": _count("status", policy.status),
        "backoff_factor": _seconds("backoff_factor", policy.backoff_factor),
        "backoff_max": _seconds("backoff_max", policy.backoff_max),
        "jitter": _seconds("backoff_jitter", getattr(policy, "backoff_jitter", 0.0)),
        "status_forcelist": frozenset(statuses or ()),
        "allowed_methods": _ANY_METHOD if not methods else frozenset(
            str(m).upper() for m in methods),
        "respect_retry_after": bool(policy.respect_retry_after_header),
        "raise_on_status": bool(policy.raise_on_status),
    }
    retry_after_max = getattr(policy, "retry_after_max", None)  # urllib3 2.5 and later
    if retry_after_max is not None:
        options["retry_after_max"] = _seconds("retry_after_max", retry_after_max)
    return Retry(**options)


# -- errors ------------------------------------------------------------------------------------
def _ssl_in_chain(exc: BaseException) -> bool:
    """Whether an ssl.SSLError (a handshake or certificate failure) lies under `exc`."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 16:
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _attempt_error(exc: HTTPError) -> tuple[BaseException, bool]:
    """The error that decides the type: a RetryError's last attempt's. True when retries were
    spent (urllib3 then wraps the error in MaxRetryError, which HTTPAdapter maps its way)."""
    if isinstance(exc, RetryError) and exc.last_error is not None:
        return exc.last_error, True
    return exc, False


def _head_error(exc: HTTPError, request: PreparedRequest) -> requests.RequestException:
    """requests' exception for a poolhttp error raised before the response's head arrived,
    of the type HTTPAdapter.send raises in the same case."""
    kind, retried = _attempt_error(exc)
    error: type[requests.RequestException]
    if isinstance(kind, HTTPStatusError):
        error = requests.exceptions.RetryError  # status retries spent (raise_on_status)
    elif isinstance(kind, ProxyError):
        error = requests.exceptions.ProxyError
    elif isinstance(kind, ConnectError) and _ssl_in_chain(kind):
        error = requests.exceptions.SSLError
    elif isinstance(kind, ConnectTimeout | PoolTimeout):
        error = requests.exceptions.ConnectTimeout
    elif isinstance(kind, ReadTimeout | WriteTimeout):
        # urllib3 raises a read time-out as it is when no retry is allowed, and wrapped in
        # MaxRetryError once retries were spent: HTTPAdapter makes the latter ConnectionError.
        error = (requests.exceptions.ConnectionError if retried
                 else requests.exceptions.ReadTimeout)
    elif isinstance(kind, TimeoutException):  # TotalTimeout: requests has no total limit
        error = requests.exceptions.Timeout
    elif isinstance(kind, InvalidURL):
        error = requests.exceptions.InvalidURL
    elif isinstance(kind, InvalidRequest):
        error = requests.exceptions.InvalidHeader
    else:  # ConnectError, ReadError, ServerDisconnected, protocol errors, PoolClosed
        error = requests.exceptions.ConnectionError
    return error(_worded(exc), request=request)


def _body_error(exc: HTTPError, request: PreparedRequest | None) -> requests.RequestException:
    """requests' exception for a poolhttp error raised while the body was read, of the type
    requests' Response.iter_content raises for urllib3's in the same case."""
    error: type[requests.RequestException]
    if isinstance(exc, DecodingError):
        error = requests.exceptions.ContentDecodingError
    elif _ssl_in_chain(exc):
        error = requests.exceptions.SSLError
    elif isinstance(exc, TimeoutException):  # urllib3's ReadTimeoutError: ConnectionError
        error = requests.exceptions.ConnectionError
    elif isinstance(exc, TransportError | PoolClosed):  # cut short, reset, malformed framing
        error = requests.exceptions.ChunkedEncodingError
    else:
        error = requests.exceptions.RequestException
    return error(_worded(exc), request=request)


_READ_TIMED_OUT = "Read timed out"


def _worded(exc: HTTPError) -> HTTPError:
    """`exc`, a read time-out's message led by "Read timed out", the words of urllib3's
    (and so of HTTPAdapter's errors), which code written for requests looks for in
    `str(error)`; poolhttp's own words follow. Any other error is left as it is."""
    if isinstance(exc, ReadTimeout) and exc.args and isinstance(exc.args[0], str) \
            and not exc.args[0].startswith(_READ_TIMED_OUT):
        exc.args = (f"{_READ_TIMED_OUT}: {exc.args[0]}", *exc.args[1:])
    return exc


# -- the raw response ------------------------------------------------------------------------
class _HeaderMessage:
    """What requests' cookie helpers read of `raw._original_response.msg`: `get_all`."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get_all(self, name: str, default: Any = None) -> Any:
        lower = name.lower()
        found = [value for key, value in self._pairs if key.lower() == lower]
        return found or default


class _OriginalResponse:
    __slots__ = ("msg",)

    def __init__(self, msg: _HeaderMessage) -> None:
        self.msg = msg


def _header_pairs(response: Response) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.headers.raw]


class PoolRawResponse(io.IOBase):
    """`requests.Response.raw` for a response carried by poolhttp: the file-like body as
    received, in the shape requests (and code written for HTTPAdapter's urllib3 response)
    reads it: `read(amt, decode_content=)`, `stream(amt, decode_content=)`, `readinto`,
    `close()`, `closed`, `release_conn()`, `status`, `reason`, `version`, `headers` (a
    urllib3 HTTPHeaderDict). By default `read()` gives the bytes as received
    (`decode_content=False`, as HTTPAdapter sets it); requests itself reads it decoded.

    Reading the body to its end gives the connection back to the pool; closing it before
    the end closes the connection.
    """

    def __init__(self, response: Response, request: PreparedRequest | None = None,
                 adapter: PoolAdapter | None = None) -> None:
        super().__init__()
        self._response = response
        self._adapter = adapter
        self._request = request
        self.status = response.status_code
        self.decode_content = False
        self._headers: urllib3.HTTPHeaderDict | None = None
        self._chunks: Iterator[bytes] | None = None
        self._decoding = False
        self._buffer = bytearray()
        self._ended = False
        self._position = 0

    # -- metadata --------------------------------------------------------------------------
    @property
    def reason(self) -> str:
        return self._response.reason_phrase

    @property
    def version(self) -> int:
        """11 or 20 (10 for HTTP/1.0), as urllib3's `HTTPResponse.version`."""
        return {"HTTP/1.0": 10, "HTTP/2": 20}.get(self._response.http_version, 11)

    @property
    def version_string(self) -> str:
        return self._response.http_version

    @property
    def headers(self) -> urllib3.HTTPHeaderDict:
        """The response's headers as urllib3 keeps them (made on first use; a change to
        Content-Encoding here changes how the body is decoded, as with urllib3)."""
        if self._headers is None:
            self._headers = urllib3.HTTPHeaderDict()
            for name, value in _header_pairs(self._response):
                self._headers.add(name, value)
        return self._headers

    @property
    def _original_response(self) -> _OriginalResponse | None:
        """What requests' `extract_cookies_to_jar` reads the Set-Cookie headers from; None
        (nothing to extract) when the response sets no cookie, the common case."""
        raw = self._response.headers.raw
        if not any(name.lower() == b"set-cookie" for name, _ in raw):
            return None
        return _OriginalResponse(_HeaderMessage(_header_pairs(self._response)))

    @property
    def url(self) -> str | None:
        return self._request.url if self._request is not None else None

    def getheaders(self) -> urllib3.HTTPHeaderDict:
        return self.headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def info(self) -> urllib3.HTTPHeaderDict:
        return self.headers

    # -- the body --------------------------------------------------------------------------
    def _source(self, decode: bool) -> Iterator[bytes]:
        """The body's chunks, decoded or as received; chosen by the first read."""
        if self._chunks is None:
            self._decoding = decode
            self._chunks = self._pieces(decode)
        return self._chunks

    def _pieces(self, decode: bool) -> Iterator[bytes]:
        decoder: ContentDecoder | None = None
        if decode:
            coding = (self._headers.get("content-encoding") if self._headers is not None
                      else self._response.headers.get("content-encoding"))
            if coding:
                try:
                    decoder = make_decoder(coding, str(self._response.request.url.origin))
                except DecodingError as exc:
                    raise _body_error(exc, self._request) from exc
        try:
            for chunk in self._response.iter_raw():
                if decoder is None:
                    yield chunk
                else:
                    yield from decoder.decode(chunk)
            if decoder is not None:
                yield from decoder.finish()
        except HTTPError as exc:
            raise _body_error(exc, self._request) from exc
        finally:
            self._ended = True
            self._released()

    def _released(self) -> None:
        """The connection is back (or closed): an adapter closed meanwhile may now close
        the client this response came from."""
        adapter = self._adapter
        if adapter is not None and adapter._retiring:
            self._adapter = None
            adapter._close_retired()

    def stream(self, amt: int | None = 2 ** 16,
               decode_content: bool | None = None) -> Iterator[bytes]:
        """Yield the body in pieces of `amt` bytes (the last may be shorter; None: as they
        arrive), decoded if `decode_content` (requests' iter_content asks for that)."""
        decode = self.decode_content if decode_content is None else decode_content
        chunker = ByteChunker(amt if amt and amt > 0 else None)
        if self._buffer:
            held, self._buffer = bytes(self._buffer), bytearray()
            yield from self._count(chunker.feed(held))
        for chunk in self._source(decode):
            yield from self._count(chunker.feed(chunk))
        yield from self._count(chunker.flush())

    def _count(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            if piece:
                self._position += len(piece)
                yield piece

    def read(self, amt: int | None = None, decode_content: bool | None = None,
             cache_content: bool = False) -> bytes:
        """Up to `amt` bytes of the body (all of the rest for None); b"" at its end."""
        decode = self.decode_content if decode_content is None else decode_content
        source = self._source(decode)
        buffer = self._buffer
        if amt is None or amt < 0:
            buffer.extend(b"".join(source))
            data = bytes(buffer)
            buffer.clear()
        else:
            while len(buffer) < amt:
                chunk = next(source, None)
                if chunk is None:
                    break
                buffer.extend(chunk)
            data = bytes(buffer[:amt])
            del buffer[:amt]
        self._position += len(data)
        return data

    def read1(self, amt: int | None = None) -> bytes:
        return self.read(amt if amt is not None and amt >= 0 else 2 ** 16)

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed out so far (decoded ones when reading decoded)."""
        return self._position

    @property
    def data(self) -> bytes:
        """The whole body as received (urllib3's `.data`)."""
        return self.read(decode_content=False)

    # -- the connection --------------------------------------------------------------------
    def close(self) -> None:
        """Release the connection: back to the pool when the body was read to its end,
        closed otherwise."""
        self._response.close()
        self._ended = True
        self._released()
        super().close()

    def release_conn(self) -> None:
        self._response.close()
        self._released()

    def drain_conn(self) -> None:
        """Read the rest of the body, so that the connection goes back to the pool."""
        try:
            for _ in self._source(self._decoding if self._chunks is not None else False):
                pass
        except requests.RequestException:
            pass

    @property
    def closed(self) -> bool:
        return self._ended or self._response.is_closed or super().closed

    def isclosed(self) -> bool:
        return self.closed

    def fileno(self) -> NoReturn:
        raise OSError("the body of a poolhttp response has no file descriptor")

    def flush(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<PoolRawResponse [{self.status} {self.reason}]>"


# -- the adapter -------------------------------------------------------------------------------
# poolhttp client options that belong to requests here (requests does these steps, or passes
# them per request), refused with the requests way to set them.
_REQUESTS_OWNS: dict[str, str] = {
    "base_url": "build the URLs yourself",
    "headers": "set session.headers",
    "follow_redirects": "requests follows redirects (session.max_redirects, allow_redirects=)",
    "max_redirects": "set session.max_redirects",
    "cookies": "use session.cookies",
    "auth": "set session.auth",
    "event_hooks": "use session.hooks",
    "max_content_size": "requests reads the body",
    "verify": "set session.verify or pass verify= per request",
    "cert": "set session.cert or pass cert= per request",
    "proxy": "set session.proxies or pass proxies= per request",
    "trust_env": "set session.trust_env",
    "retries": "pass max_retries=",
    "mounts": "mount adapters on the session",
}
_UNBLOCKED_MAX_CONNECTIONS = 1000  # pool_block=False: never wait, but stay bounded
_DEFAULT_POOLSIZE = 10  # HTTPAdapter's pool_connections and pool_maxsize
_BODY_BLOCK = 64 * 1024  # a file-like request body is read in blocks of this size


def _file_chunks(body: Any) -> Iterator[bytes]:
    while True:
        block = body.read(_BODY_BLOCK)
        if not block:
            return
        yield block.encode("utf-8") if isinstance(block, str) else block


def _check_headers(pairs: list[tuple[Any, Any]], request: PreparedRequest) -> NoReturn:
    """The InvalidHeader for a header poolhttp refused, naming the header but never its
    value (which may be a credential)."""
    for name, value in pairs:
        try:
            encode_header_pairs([(name, value)])
        except InvalidRequest:
            raise requests.exceptions.InvalidHeader(
                f"header {str(name)!r} cannot be sent: its name must be a token, and its "
                "value latin-1 text (or bytes) without CR, LF or NUL",
                request=request) from None
    raise requests.exceptions.InvalidHeader("invalid headers", request=request)


class PoolAdapter(BaseAdapter):
    """A requests transport adapter over poolhttp's pool:
    `session.mount("https://", PoolAdapter())`, in place of `HTTPAdapter`.

    - `pool_connections`, `pool_maxsize`, `pool_block`: as HTTPAdapter's (10, 10, False).
      Up to `pool_connections * pool_maxsize` idle connections are kept for reuse. With
      `pool_block=False` no request waits for a connection (up to 1,000 open in all, as a
      bound); with `pool_block=True` at most `pool_maxsize` connections are open per host
      and a request waits for one (up to the time-outs' `pool`, then ConnectTimeout). Or
      give `limits=` a `poolhttp.Limits`.
    - `max_retries`: an int, a `urllib3.util.Retry` (mapped onto `poolhttp.Retry`; what
      cannot be mapped raises `RetryNotMappable` naming the field) or a `poolhttp.Retry`.
    - `timeout`: a `poolhttp.Timeout` (or seconds, or None) for requests sent without
      `timeout=`; its `pool` and `total` apply to every request. Default: poolhttp's
      bounded time-outs, not requests' wait-forever.
    - `http2`, and poolhttp client options about connections (`http1`, `socket_options`,
      `uds`, `local_address`, `family`, `dns_ttl`, `tls_resumption`,
      `happy_eyeballs_delay`, `trace`). What requests does itself (headers, redirects,
      cookies, auth, hooks, verify, cert, proxies) is refused with a TypeError saying where
      to set it.

    Per request, requests' `timeout=` (seconds, (connect, read), a urllib3 Timeout or None),
    `verify=`, `cert=`, `proxies=` and `stream=` are honoured.
    """

    def __init__(self, pool_connections: int | None = None, pool_maxsize: int | None = None,
                 max_retries: object = 0, pool_block: bool | None = None, *,
                 limits: Limits | None = None, timeout: TimeoutTypes = Timeout(),
                 http2: bool = False, **options: Any) -> None:
        super().__init__()
        refused = sorted(_REQUESTS_OWNS.keys() & options.keys())
        if refused:
            raise TypeError("; ".join(f"{name}: {_REQUESTS_OWNS[name]}" for name in refused))
        if limits is not None:
            given = [name for name, value in (("pool_connections", pool_connections),
                                              ("pool_maxsize", pool_maxsize),
                                              ("pool_block", pool_block)) if value is not None]
            if given:
                raise TypeError(f"pass limits= or {', '.join(given)}, not both")
            if not isinstance(limits, Limits):
                raise TypeError(f"limits must be a poolhttp.Limits, not "
                                f"{type(limits).__name__}")
        else:
            limits = _limits(pool_connections, pool_maxsize, pool_block)
        self._init_args: dict[str, Any] = {
            "pool_connections": pool_connections, "pool_maxsize": pool_maxsize,
            "max_retries": max_retries, "pool_block": pool_block, "limits": limits,
            "timeout": timeout, "http2": http2, **options}
        if isinstance(max_retries, (Retry, urllib3.util.Retry)) or max_retries is None:
            self.max_retries: object = max_retries
        elif isinstance(max_retries, int) and not isinstance(max_retries, bool):
            self.max_retries = urllib3.util.Retry.from_int(max_retries)
        else:
            self.max_retries = max_retries
        self.retries = to_pool_retry(max_retries)
        self.limits = limits
        self.timeout = Timeout.coerce(timeout)
        self.http2 = http2
        self._options = {"limits": limits, "timeout": self.timeout, "http2": http2,
                         "retries": self.retries, "trust_env": False, **options}
        Client(**self._options).close()  # check the options now, not at the first request
        self._clients: dict[tuple[Any, ...], Client] = {}
        # Clients of a close() that still had a response's body to deliver: each is closed
        # once none of its connections is in use (see close()).
        self._retiring: list[Client] = []
        self._lock = threading.Lock()
        self._timeouts: dict[tuple[Any, ...], Timeout] = {}
        self._proxies: dict[str, Proxy] = {}
        self._ca_bundle = DEFAULT_CA_BUNDLE_PATH  # requests' (certifi's), as HTTPAdapter's

    # -- pickling, as HTTPAdapter: the settings, not the pool --------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return dict(self._init_args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        args = dict(state)
        if args.get("limits") is not None and any(
                args.get(name) is not None
                for name in ("pool_connections", "pool_maxsize", "pool_block")):
            args["limits"] = None  # the limits were made from these
        self.__init__(**args)  # type: ignore[misc]

    # -- clients -----------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The poolhttp client of direct requests with the default TLS settings."""
        return self._client(None, True, None)

    @property
    def clients(self) -> list[Client]:
        """Every poolhttp client this adapter holds open (those a close() left to finish a
        response's body included)."""
        with self._lock:
            return [*self._clients.values(), *self._retiring]

    def _client(self, proxy: Proxy | None, verify: bool | str, cert: Any) -> Client:
        key = (None if proxy is None else proxy.key, verify, cert)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    if len(self._clients) >= 1024:
                        raise requests.exceptions.ConnectionError(
                            "PoolAdapter: over 1,024 distinct proxy/verify/cert settings in "
                            "use; close() the adapter or reuse settings")
                    client = self._clients[key] = Client(
                        **self._options, proxy=proxy,
                        verify=self._ca_bundle if verify is True else verify, cert=cert)
        return client

    def _tls_settings(self, request: PreparedRequest, https: bool, verify: Any,
                      cert: Any) -> tuple[bool | str, Any]:
        """(verify, cert) as the client key wants them, checked as HTTPAdapter checks them
        (same OSError messages); plain-http requests share the default client."""
        if cert is not None and cert != ():
            if isinstance(cert, str):
                files: tuple[Any, ...] = (cert, None)
            elif isinstance(cert, (tuple, list)) and len(cert) in (2, 3):
                files = (cert[0], cert[1])
                cert = tuple(cert)
            else:
                raise requests.exceptions.InvalidHeader(
                    "cert must be a path or a (certfile, keyfile) tuple", request=request)
            if files[0] and not os.path.exists(files[0]):
                raise OSError(f"Could not find the TLS certificate file, invalid path: "
                              f"{files[0]}")
            if files[1] and not os.path.exists(files[1]):
                raise OSError(f"Could not find the TLS key file, invalid path: {files[1]}")
        else:
            cert = None
        if not https:
            return True, None
        if verify is False or verify is None:
            return False, cert
        if verify is True:
            return True, cert
        if not isinstance(verify, str) or not os.path.exists(verify):
            raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid "
                          f"path: {verify}")
        return verify, cert

    def _proxy(self, request: PreparedRequest, url: str,
               proxies: Mapping[str, str] | None) -> Proxy | None:
        chosen = select_proxy(url, proxies) if proxies else None
        if not chosen:
            return None
        try:  # urllib3's parse errors quote the URL, credentials included: not passed on
            chosen = prepend_scheme_if_needed(chosen, "http")  # type: ignore[no-untyped-call]
            has_host = bool(urllib3_parse_url(chosen).host)
        except ValueError:
            has_host = False
        if not has_host:
            raise requests.exceptions.InvalidProxyURL(
                "Please check proxy URL. It is malformed and could be missing the host.",
                request=request)
        proxy = self._proxies.get(chosen)
        if proxy is None:
            try:
                proxy = Proxy.coerce(chosen)
            except HTTPError as exc:
                raise requests.exceptions.InvalidProxyURL(exc, request=request) from exc
            assert proxy is not None
            if len(self._proxies) > 256:
                self._proxies.clear()
            self._proxies[chosen] = proxy
        return proxy

    # -- time-outs ---------------------------------------------------------------------------
    def _timeout(self, value: Any) -> Timeout:
        if value is None:
            return self.timeout
        total = self.timeout.total
        if isinstance(value, tuple):
            try:
                connect, read = value
            except ValueError:
                raise ValueError(f"Invalid timeout {value}. Pass a (connect, read) timeout "
                                 "tuple, or a single float to set both timeouts to the same "
                                 "value.") from None
        elif isinstance(value, urllib3.util.Timeout):
            connect, read = value._connect, value._read  # the properties need a started clock
            given_total: Any = value.total
            if given_total is not None and given_total is not _URLLIB3_DEFAULT:
                total = float(given_total)
        else:
            connect = read = value
        key = (connect, read, total)
        try:
            made = self._timeouts.get(key)
        except TypeError:  # unhashable: not a number
            made = None
        if made is None:
            default = self.timeout
            phases: dict[str, float | None] = {}
            for phase, given, fallback in (("connect", connect, default.connect),
                                           ("read", read, default.read)):
                if given is _URLLIB3_DEFAULT:
                    given = fallback
                if given is not None and (isinstance(given, bool)
                                          or not isinstance(given, (int, float))):
                    raise ValueError(f"Timeout value {phase} was {given}, but it must be an "
                                     "int, float or None.")
                if given is not None and given < 0:
                    raise ValueError(f"Attempted to set {phase} timeout to {given}, but a "
                                     "timeout cannot be negative.")
                phases[phase] = given
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            # urllib3 sends the request under the connect time-out: so does the adapter.
            made = self._timeouts[key] = Timeout(connect=phases["connect"],
                                                 read=phases["read"],
                                                 write=phases["connect"], pool=default.pool,
                                                 total=total)
        return made

    # -- sending -----------------------------------------------------------------------------
    def _pool_request(self, request: PreparedRequest, url: str,
                      proxy: Proxy | None) -> Request:
        """The poolhttp request for requests' prepared one: its method, URL, headers and
        body as requests made them; the framing header is re-created from them."""
        try:
            method = request.method or "GET"
            if method not in _PLAIN_METHODS:
                method = check_method(method)
            target = parse_url(url)
        except InvalidURL as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from exc
        except InvalidRequest as exc:
            raise requests.exceptions.InvalidHeader(exc, request=request) from exc
        path = request.path_url
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        try:
            wanted = path.encode("ascii")
        except UnicodeEncodeError:
            wanted = target.target
        if target.target != wanted:  # keep requests' encoding of the path and query
            target = URL(target)  # a copy: parse_url's result is shared
            target.target = wanted
        pairs = list(request.headers.items())
        try:
            headers = encode_header_pairs(pairs)
        except InvalidRequest:
            _check_headers(pairs, request)
        length: int | None = None
        chunked = has_length = False
        kept: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                has_length = True
                try:
                    length = int(value)
                except ValueError:
                    raise requests.exceptions.InvalidHeader(
                        f"invalid Content-Length {value!r}", request=request) from None
            elif lower == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif lower == b"proxy-authorization" and proxy is not None and (
                    proxy.username is not None or target.origin.scheme == "https"):
                continue  # the proxy's own credentials go to the proxy only, never through
            else:           # the tunnel to the origin
                kept.append((name, value))
        if chunked:
            length = None  # Transfer-Encoding wins over Content-Length (RFC 9112 6.3)
        body: Any = request.body
        content: bytes | None = None
        stream: Any = None
        if body is None:
            content = b"" if has_length else None
        elif isinstance(body, bytes):
            content = body
        elif isinstance(body, str):
            content = body.encode("utf-8")  # as urllib3 2 sends a str body
        elif isinstance(body, (bytearray, memoryview)):
            content = bytes(body)
        elif hasattr(body, "read"):
            stream = _file_chunks(body)
        elif isinstance(body, Iterable):
            stream = (chunk.encode("utf-8") if isinstance(chunk, str) else chunk
                      for chunk in body)
        else:
            raise requests.exceptions.InvalidHeader(
                f"cannot send a request body of type {type(body).__name__}", request=request)
        if content is not None and chunked:
            stream, content = [content], None
        elif content is not None and length is not None and length != len(content):
            raise requests.exceptions.InvalidHeader(
                f"Content-Length {length} does not match the body's {len(content)} bytes",
                request=request)
        return Request.build(method, target, kept, [], content, stream,
                             None if chunked else length)

    def send(self, request: PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: bool | str = True, cert: Any = None,
             proxies: Mapping[str, str] | None = None) -> requests.Response:
        """Send a prepared request (requests' Session.send calls this)."""
        url = request.url
        if isinstance(url, bytes):
            url = url.decode("utf-8")
        if not url:
            raise requests.exceptions.InvalidURL("no URL to send the request to",
                                                 request=request)
        scheme = url.partition(":")[0].lower()
        if scheme not in ("http", "https"):
            raise requests.exceptions.InvalidSchema(
                f"PoolAdapter sends http:// and https:// requests, not {scheme}://",
                request=request)
        if self._retiring:  # clients of an earlier close() whose last body has been read
            self._close_retired()
        proxy = self._proxy(request, url, proxies)
        tls_verify, tls_cert = self._tls_settings(request, scheme == "https", verify, cert)
        try:
            client = self._client(proxy, tls_verify, tls_cert)
        except (ValueError, TypeError) as exc:  # a certificate that does not load
            raise requests.exceptions.SSLError(exc, request=request) from exc
        pool_request = self._pool_request(request, url, proxy)
        pool_timeout = self._timeout(timeout)
        try:
            response = client._send(pool_request, pool_timeout, True, None)
        except HTTPError as exc:
            if self._retiring:
                self._close_retired()
            raise _head_error(exc, request) from exc
        raw = PoolRawResponse(response, request, self)
        try:
            return self.build_response(request, raw)
        except BaseException:
            raw.close()  # the connection goes back (or is closed) with the error
            raise

    def build_response(self, req: PreparedRequest, resp: PoolRawResponse) -> requests.Response:
        """The requests Response for poolhttp's (wrapped as `resp`), built as HTTPAdapter
        builds its own from urllib3's: status, case-insensitive headers, encoding, reason,
        the raw body, URL, cookies into its jar, request and connection."""
        response = requests.Response()
        response.status_code = resp.status
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in resp._response.headers.raw:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            if key in headers:  # repeated: joined, as urllib3's HTTPHeaderDict reads
                headers[key] = f"{headers[key]}, {text}"
            else:
                headers[key] = text
        response.headers = headers
        response.encoding = get_encoding_from_headers(headers)
        response.raw = resp
        response.reason = resp.reason
        url = req.url
        response.url = url.decode("utf-8") if isinstance(url, bytes) else (url or "")
        extract_cookies_to_jar(response.cookies, req, resp)  # type: ignore[no-untyped-call]
        response.request = req
        response.connection = self  # type: ignore[assignment]  # stubs: an HTTPAdapter
        return response

    def close(self) -> None:
        """Close every poolhttp client of the adapter, and with them every connection. The
        adapter stays usable, as HTTPAdapter does: a later request opens a new pool.

        A response still being read (`stream=True`; `requests.get(url, stream=True)` closes
        its session before returning) keeps its connection until its body has been read or
        it is closed: its client is closed then, with its idle connections."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._retiring.extend(clients)
        self._close_retired()

    def _close_retired(self) -> None:
        """Close the retired clients none of whose connections is in use any more."""
        with self._lock:
            done = [client for client in self._retiring if client.stats().active == 0]
            self._retiring = [client for client in self._retiring if client not in done]
        for client in done:
            client.close()

    def __repr__(self) -> str:
        with self._lock:
            proxies = sorted({client.proxy.url for client in self._clients.values()
                              if client.proxy is not None})
        shown = f", proxies={proxies}" if proxies else ""
        return (f"<PoolAdapter limits={self.limits!r} http2={self.http2} "
                f"clients={len(self._clients)}{shown}>")


_PLAIN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_URLLIB3_DEFAULT: Any = urllib3.util.Timeout.DEFAULT_TIMEOUT  # "not given" in a urllib3 Timeout


def _limits(pool_connections: int | None, pool_maxsize: int | None,
            pool_block: bool | None) -> Limits:
    """HTTPAdapter's pool settings as poolhttp Limits (see PoolAdapter)."""
    connections = _DEFAULT_POOLSIZE if pool_connections is None else pool_connections
    maxsize = _DEFAULT_POOLSIZE if pool_maxsize is None else pool_maxsize
    for name, value in (("pool_connections", connections), ("pool_maxsize", maxsize)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, not {value!r}")
    keep = connections * maxsize
    # pool_block bounds each host, not all of them: HTTPAdapter opens a new host's pool
    # whatever the others hold (it drops the least recently used one past pool_connections).
    return Limits(max_connections=max(_UNBLOCKED_MAX_CONNECTIONS, keep),
                  max_connections_per_host=max(maxsize, 1) if pool_block else None,
                  max_keepalive_connections=keep)

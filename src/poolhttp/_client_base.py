"""What AsyncClient and Client share: configuration, request building and the verb methods.

Building a request is pure computation, so it lives here once; each client adds only its I/O.
The request is encoded by the connection that carries it (`_core.http11.RequestEncoder`).
"""

from __future__ import annotations

import json as jsonlib
import socket
import sys
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from ._config import Limits, PoolConfig, Retry, Timeout, TimeoutTypes
from ._cookies import Cookies, CookieTypes
from ._core.pool import PoolKey
from ._decoders import accept_encoding
from ._exceptions import InvalidRequest, PoolClosed, ProxyError, TotalTimeout
from ._headers import Headers, HeaderTypes, check_trailers, encode_header_pairs, trailer_pairs
from ._log import DEBUG, client_log
from ._models import Request, Response, TrailerSource, check_method
from ._mounts import Mount
from ._proxy import Proxy
from ._retry import RetryPlan
from ._route import Route, Router, route_of
from ._steps import AuthTypes, Hook, Steps, coerce_auth
from ._tls import CertTypes, VerifyTypes, check_cert, check_verify
from ._trace import Trace, emit
from ._urls import URL, Origin, QueryParams, encode_params, parse_url
from ._version import __version__

if TYPE_CHECKING:
    from ._auth import Auth
    from ._exceptions import TransportError
    from ._multipart import FilesTypes

__all__ = ["ClientBase", "ProxyTypes", "RequestContent", "SocketOption"]

#: `trailers=`: header-like fields, or a callable returning them once the body has been sent.
TrailerTypes = HeaderTypes | Callable[[], HeaderTypes] | None
RequestContent = Any  # bytes | str | Iterable[bytes] | AsyncIterable[bytes]; checked at run time
ProxyTypes = Union[str, URL, "Proxy", None]
SocketOption = tuple[int, int, int | bytes]  # (level, option, value), as socket.setsockopt

_DEFAULT_HEADERS: list[tuple[bytes, bytes]] = [
    (b"User-Agent", f"poolhttp/{__version__}".encode("ascii")),
    (b"Accept", b"*/*"),
]

R = TypeVar("R")


class ClientBase(Generic[R]):
    """Configuration and request building shared by the async and the sync client."""

    def __init__(self, *, base_url: str | URL | None = None, headers: HeaderTypes | None = None,
                 limits: Limits = Limits(), timeout: TimeoutTypes = Timeout(),
                 verify: VerifyTypes = True, dns_ttl: float = 10.0, family: int = 0,
                 local_address: str | None = None, retries: Retry | int | None = 0,
                 follow_redirects: bool = False, max_redirects: int = 20,
                 cookies: CookieTypes | None = None, auth: AuthTypes = None,
                 event_hooks: Mapping[str, Sequence[Hook]] | None = None,
                 max_content_size: int | None = None, http1: bool = True,
                 http2: bool = False, proxy: ProxyTypes = None, trust_env: bool = True,
                 cert: CertTypes | None = None,
                 socket_options: Iterable[SocketOption] | None = None,
                 uds: str | None = None, tls_resumption: bool = True,
                 happy_eyeballs_delay: float | None = 0.25,
                 trace: Trace | None = None,
                 mounts: Mapping[str, Mount] | None = None) -> None:
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a poolhttp.Limits, not {type(limits).__name__}")
        if family not in (0, socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"family must be 0, socket.AF_INET or socket.AF_INET6, not {family!r}")
        if isinstance(dns_ttl, bool) or not isinstance(dns_ttl, (int, float)) or dns_ttl < 0:
            raise ValueError(f"dns_ttl must be a number of seconds >= 0, not {dns_ttl!r}")
        if local_address is not None and not isinstance(local_address, str):
            raise TypeError(f"local_address must be an IP address string, not "
                            f"{type(local_address).__name__}")
        self.http1, self.http2 = _check_protocols(http1, http2)
        if not isinstance(trust_env, bool):
            raise TypeError(f"trust_env must be True or False, not {trust_env!r}")
        if not isinstance(tls_resumption, bool):
            raise TypeError(f"tls_resumption must be True or False, not {tls_resumption!r}")
        if trace is not None and not callable(trace):
            raise TypeError(f"trace must be a callable trace(event, info), not "
                            f"{type(trace).__name__}")
        self.trace = trace  # the default of every request's trace=
        self.trust_env = trust_env
        self.base_url = URL(base_url) if base_url is not None else None
        self.limits = limits
        self.timeout = Timeout.coerce(timeout)
        self.verify = check_verify(verify)
        self.cert = check_cert(cert, self.verify)
        self.dns_ttl = float(dns_ttl)
        self.family = family
        self.local_address = local_address
        self.retries = Retry.coerce(retries)
        self.proxy = Proxy.coerce(proxy) if proxy is not None else None
        if uds is not None and not isinstance(uds, str):
            raise TypeError(f"uds must be the path of a Unix socket (str), not "
                            f"{type(uds).__name__}")
        if uds is not None and self.proxy is not None:
            raise ValueError("uds= and proxy= exclude each other: a Unix socket is dialled "
                             "directly")
        self._config = PoolConfig(
            limits=limits, dns_ttl=self.dns_ttl, family=family, local_address=local_address,
            socket_options=check_socket_options(socket_options), uds=uds,
            tls_resumption=tls_resumption,
            happy_eyeballs_delay=_check_delay(happy_eyeballs_delay))
        self._router = Router(
            Route(proxy=self.proxy, verify=self.verify, cert=self.cert, http1=self.http1,
                  http2=self.http2, timeout=self.timeout, retries=self.retries),
            trust_env=trust_env, uds=uds, mounts=mounts)
        self._mounted = self._router.mounted  # per-route time-outs and retries to look up
        self._keys: dict[str, PoolKey] = {}  # origin -> its pool key, made once
        self._retried = 0  # requests sent again, for stats().retries
        self._retried_lock = threading.Lock()  # the blocking client counts from many threads
        self._status_retries = self._router.status_retries
        user = encode_header_pairs(headers)
        overridden = {name.lower() for name, _ in user}
        self._headers = Headers.from_raw(
            [p for p in [*_DEFAULT_HEADERS, (b"Accept-Encoding", accept_encoding())]
             if p[0].lower() not in overridden] + user)
        if max_content_size is not None and (isinstance(max_content_size, bool) or not isinstance(
                max_content_size, int) or max_content_size < 0):
            raise ValueError(f"max_content_size must be a number of bytes >= 0 or None, not "
                             f"{max_content_size!r}")
        self.max_content_size = max_content_size
        self._steps = Steps(follow_redirects=follow_redirects, max_redirects=max_redirects,
                            cookies=cookies, auth=auth, event_hooks=event_hooks)
        frame = sys._getframe(2) if hasattr(sys, "_getframe") else None
        self._created_at = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"

    # -- configuration views -------------------------------------------------------------
    @property
    def headers(self) -> Headers:
        """The default headers sent with every request; edit them in place or assign."""
        return self._headers

    @headers.setter
    def headers(self, value: HeaderTypes) -> None:
        self._headers = Headers(value)

    # -- the verbs -----------------------------------------------------------------------
    def request(self, method: str, url: str | URL, *, params: QueryParams | None = None,
                headers: HeaderTypes | None = None, content: RequestContent = None,
                data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
                timeout: TimeoutTypes | Timeout = None, trace: Trace | None = None,
                follow_redirects: bool | None = None, auth: AuthTypes = None,
                cookies: CookieTypes | None = None, trailers: TrailerTypes = None) -> R:
        raise NotImplementedError

    def get(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, timeout: TimeoutTypes = None,
            trace: Trace | None = None, follow_redirects: bool | None = None,
            auth: AuthTypes = None, cookies: CookieTypes | None = None) -> R:
        return self.request("GET", url, params=params, headers=headers,
                            timeout=timeout, trace=trace, follow_redirects=follow_redirects,
                            auth=auth, cookies=cookies)

    def head(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, timeout: TimeoutTypes = None,
            trace: Trace | None = None, follow_redirects: bool | None = None,
            auth: AuthTypes = None, cookies: CookieTypes | None = None) -> R:
        return self.request("HEAD", url, params=params, headers=headers,
                            timeout=timeout, trace=trace, follow_redirects=follow_redirects,
                            auth=auth, cookies=cookies)

    def options(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, timeout: TimeoutTypes = None,
            trace: Trace | None = None, follow_redirects: bool | None = None,
            auth: AuthTypes = None, cookies: CookieTypes | None = None) -> R:
        return self.request("OPTIONS", url, params=params, headers=headers,
                            timeout=timeout, trace=trace, follow_redirects=follow_redirects,
                            auth=auth, cookies=cookies)

    def delete(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, timeout: TimeoutTypes = None,
            trace: Trace | None = None, follow_redirects: bool | None = None,
            auth: AuthTypes = None, cookies: CookieTypes | None = None) -> R:
        return self.request("DELETE", url, params=params, headers=headers,
                            timeout=timeout, trace=trace, follow_redirects=follow_redirects,
                            auth=auth, cookies=cookies)

    def post(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, content: RequestContent = None,
            data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
            timeout: TimeoutTypes = None, trace: Trace | None = None,
            follow_redirects: bool | None = None, auth: AuthTypes = None,
            cookies: CookieTypes | None = None) -> R:
        return self.request("POST", url, params=params, headers=headers,
                            content=content, data=data, files=files, json=json,
                            timeout=timeout, trace=trace,
                            follow_redirects=follow_redirects, auth=auth, cookies=cookies)

    def put(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, content: RequestContent = None,
            data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
            timeout: TimeoutTypes = None, trace: Trace | None = None,
            follow_redirects: bool | None = None, auth: AuthTypes = None,
            cookies: CookieTypes | None = None) -> R:
        return self.request("PUT", url, params=params, headers=headers,
                            content=content, data=data, files=files, json=json,
                            timeout=timeout, trace=trace,
                            follow_redirects=follow_redirects, auth=auth, cookies=cookies)

    def patch(self, url: str | URL, *, params: QueryParams | None = None,
            headers: HeaderTypes | None = None, content: RequestContent = None,
            data: Mapping[str, Any] | None = None, files: FilesTypes | None = None,
                json: Any = None,
            timeout: TimeoutTypes = None, trace: Trace | None = None,
            follow_redirects: bool | None = None, auth: AuthTypes = None,
            cookies: CookieTypes | None = None) -> R:
        return self.request("PATCH", url, params=params, headers=headers,
                            content=content, data=data, files=files, json=json,
                            timeout=timeout, trace=trace,
                            follow_redirects=follow_redirects, auth=auth, cookies=cookies)

    # -- the steps: cookies, auth, redirects, hooks ----------------------------------------
    @property
    def cookies(self) -> Cookies:
        """The client's cookie jar (dict-like; `.jar` is the http.cookiejar.CookieJar)."""
        return self._steps.cookies

    @cookies.setter
    def cookies(self, value: CookieTypes) -> None:
        self._steps.cookies = Cookies(value)

    def _step_options(self, follow_redirects: bool | None, auth: AuthTypes,
                      cookies: CookieTypes | None) -> tuple[bool, Auth | None, Cookies | None]:
        """A request's own settings for the steps, over the client's."""
        steps = self._steps
        follow = steps.follow_redirects if follow_redirects is None else follow_redirects
        if not isinstance(follow, bool):
            raise InvalidRequest(f"follow_redirects must be True or False, not {follow!r}")
        return (follow, steps.auth if auth is None else coerce_auth(auth),
                None if cookies is None else Cookies(cookies))

    # -- building ------------------------------------------------------------------------
    def _retries_status(self, response: Response, key: PoolKey) -> bool:
        route = route_of(key)
        return route.status_retries and response.status_code in route.retries.status_forcelist

    def _next_step(self, plan: RetryPlan | None, outcome: Response | TransportError,
                   request: Request) -> tuple[RetryPlan, float | None]:
        """The step of both request loops after an attempt that did not simply succeed (the
        retry policy today): seconds to wait before the next attempt, or None to return the
        response; raises what the caller should see. The plan is made on first use."""
        if plan is None:
            plan = RetryPlan(route_of(self._pool_key(request.url.origin)).retries, request)
        return plan, plan.after(outcome, time.time())

    def _announce_retry(self, plan: RetryPlan, delay: float, request: Request,
                        timeout: Timeout, deadline: float | None, now: float,
                        trace: Trace | None) -> None:
        """What both clients do before a retry: trace it, and refuse one that would start
        after the total deadline (`now` on the same clock as `deadline`)."""
        with self._retried_lock:
            self._retried += 1
        if client_log.isEnabledFor(DEBUG):
            client_log.debug("retrying %s %s in %.3f s (retry %d): %s", request.method,
                             request.url.origin, delay, plan.attempts, plan.errors[-1])
        if trace is not None:
            emit(trace, "request.retry", attempt=plan.attempts + 1, delay=delay,
                 reason=str(plan.errors[-1]), kind=plan.kind)
        if delay and deadline is not None and now + delay >= deadline:
            raise TotalTimeout(f"no response from {request.url.origin} within the total "
                               "time-out (the next retry was due later)",
                               origin=request.url.origin.key, timeout=timeout.total)

    def _pool_key(self, origin: Origin) -> PoolKey:
        """The pool key of `origin`: what its connections must share to be interchangeable
        (see Route.key), made once per origin."""
        key = self._keys.get(origin.key)
        if key is None:
            if len(self._keys) > 4096:
                self._keys.clear()
            key = self._keys[origin.key] = self._router.route(origin).key(origin)
        return key

    def _proxy_refused(self, response: Response, key: PoolKey) -> ProxyError:
        """A forward proxy answered 407: the same typed error as a refused CONNECT."""
        proxy = route_of(key).proxy
        assert proxy is not None
        sent = "credentials were sent" if proxy.username is not None else (
            "no credentials were given: put them in the proxy URL")
        return ProxyError(f"proxy {proxy.url} refused {response.request.method} "
                          f"{response.request.url.origin}: 407 Proxy Authentication "
                          f"Required ({sent})", origin=key.origin, proxy=proxy.url,
                          status=407)

    def _resolve_timeout(self, timeout: TimeoutTypes, request: Request) -> Timeout:
        """A request's time-outs: its own, else its route's (a mount's), else the client's."""
        if timeout is not None:
            return Timeout.coerce(timeout)
        if self._mounted:
            timeout_of_route: Timeout = route_of(self._pool_key(request.url.origin)).timeout
            return timeout_of_route
        return self.timeout

    def _build(self, method: str, url: str | URL, params: QueryParams | None,
               headers: HeaderTypes | None, content: RequestContent,
               data: Mapping[str, Any] | None, json: Any, files: FilesTypes | None, *,
               allow_async_body: bool, trailers: TrailerTypes = None) -> Request:
        """Validate the arguments and make the Request; the connection that carries it
        encodes it (see `RequestEncoder`). A streamed body is on `request.stream`."""
        if trailers is not None:
            return self._build_with_trailers(method, url, params, headers, content, data,
                                             json, files, allow_async_body, trailers)
        if method.__class__ is not str or method not in _METHODS_OK:
            method = check_method(method)
        if isinstance(url, str):
            if self.base_url is not None and "://" not in url:
                target = self.base_url.join(url)
            else:
                target = parse_url(url)
        elif isinstance(url, URL):
            target = url
        else:
            raise InvalidRequest(f"url must be a str or poolhttp.URL, not {type(url).__name__}")
        if params:
            target = target.copy_with_params(params)
        extra = encode_header_pairs(headers) if headers else []
        if content is None and data is None and json is None and files is None:  # no body
            return Request.build(method, target, extra, self._headers.raw, None, None)
        body, stream, content_type, length = _encode_body(content, data, json, files,
                                                          allow_async_body)
        if content_type is not None and not any(n.lower() == b"content-type" for n, _ in extra):
            extra.append((b"Content-Type", content_type))
        return Request.build(method, target, extra, self._headers.raw, body, stream, length)

    def _build_with_trailers(self, method: str, url: str | URL, params: QueryParams | None,
                             headers: HeaderTypes | None, content: RequestContent,
                             data: Mapping[str, Any] | None, json: Any,
                             files: FilesTypes | None, allow_async_body: bool,
                             trailers: HeaderTypes | Callable[[], HeaderTypes]) -> Request:
        """A request with trailer fields: its body goes chunked on HTTP/1.1 (the only
        framing with trailers), and they follow it as a last HEADERS frame on HTTP/2.

        A callable is called once the body has been sent, for fields computed from it (a
        checksum of a streamed upload); with a body known in advance it is called now. Field
        names given up front are announced in a `Trailer` header (RFC 9110 6.6.2)."""
        source: TrailerSource = trailers if callable(trailers) else check_trailers(trailers)
        request = self._build(method, url, params, headers, content, data, json, files,
                              allow_async_body=allow_async_body)
        request.trailers = source
        if request.stream is None and callable(source):
            request.trailers = trailer_pairs(request)
        request.stream_length = None  # chunked on HTTP/1.1, whatever the size
        fields = request.trailers
        if isinstance(fields, list) and fields and not any(
                name.lower() == b"trailer" for name, _ in request.extra_headers):
            names = b", ".join(dict.fromkeys(name.lower() for name, _ in fields))
            request.extra_headers = [*request.extra_headers, (b"Trailer", names)]
        return request

    def _closed_error(self) -> PoolClosed:
        return PoolClosed(f"this {type(self).__name__} is closed; create a new one "
                          f"(it was created at {self._created_at})")


# One encoder for every request: json.dumps() with any option builds a new one per call.
_JSON = jsonlib.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

_METHODS_OK = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _encode_body(content: RequestContent, data: Mapping[str, Any] | None, json: Any,
                 files: FilesTypes | None,
                 allow_async: bool) -> tuple[bytes | None, Any, bytes | None, int | None]:
    """(body bytes, streamed body, Content-Type, the streamed body's size if known) from the
    content=/data=/json=/files= arguments. files= (with data= as its form fields) is
    multipart, streamed, with a Content-Length when every part's size is known."""
    if files is not None:
        if content is not None or json is not None:
            raise InvalidRequest("files= goes with data= (form fields), not with content= "
                                 "or json=")
        from ._multipart import encode_multipart  # only for uploads: kept off the import

        encoding = encode_multipart(data, files)
        return None, encoding.stream, encoding.content_type, encoding.content_length
    given = [name for name, value in (("content", content), ("data", data), ("json", json))
             if value is not None]
    if len(given) > 1:
        raise InvalidRequest(f"pass only one of content=, data= and json= (got {given})")
    if json is not None:
        try:
            body = _JSON.encode(json).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"json= is not JSON-serialisable: {exc}") from exc
        return body, None, b"application/json", None
    if data is not None:
        if not isinstance(data, Mapping):
            raise InvalidRequest(f"data= must be a mapping of form fields, not "
                                 f"{type(data).__name__}; use content= for raw bytes")
        return encode_params(data).encode("ascii"), None, b"application/x-www-form-urlencoded", None
    if content is None:
        return None, None, None, None
    if isinstance(content, bytes):
        return content, None, None, None
    if isinstance(content, (bytearray, memoryview)):
        return bytes(content), None, None, None
    if isinstance(content, str):
        return content.encode("utf-8"), None, b"text/plain; charset=utf-8", None
    if isinstance(content, AsyncIterable):
        if not allow_async:
            raise InvalidRequest("an async iterable body needs the AsyncClient")
        return None, content, None, None
    if isinstance(content, Iterable) and not isinstance(content, (Mapping, set, frozenset)):
        return None, content, None, None
    raise InvalidRequest(f"content= must be bytes, str or an iterable of bytes, not "
                         f"{type(content).__name__} (use json= for JSON, data= for forms)")


def _check_protocols(http1: object, http2: object) -> tuple[bool, bool]:
    """Validate `http1=` / `http2=`; HTTP/2 needs the `h2` package (the http2 extra), which
    is looked for here but imported only when a connection speaks HTTP/2."""
    for name, value in (("http1", http1), ("http2", http2)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")
    if not http1 and not http2:
        raise ValueError("http1=False and http2=False leave no protocol to speak; enable one")
    if http2:
        import importlib.util

        if importlib.util.find_spec("h2") is None:
            raise ImportError("http2=True needs the h2 package: pip install 'poolhttp[http2]'")
    return bool(http1), bool(http2)


def check_socket_options(options: object) -> tuple[SocketOption, ...]:
    """Validate `socket_options=` at construction: each (level, option, value) is set on a
    throw-away socket, so a wrong one fails here, naming it, and not at the first connect."""
    if options is None:
        return ()
    if isinstance(options, (str, bytes)) or not isinstance(options, Iterable):
        raise TypeError("socket_options must be a list of (level, option, value) tuples")
    checked: list[SocketOption] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for option in options:
            if (not isinstance(option, tuple) or len(option) != 3
                    or not all(isinstance(n, int) and not isinstance(n, bool)
                               for n in option[:2])
                    or not isinstance(option[2], (int, bytes)) or isinstance(option[2], bool)):
                raise TypeError(f"socket_options: {option!r} is not a (level, option, value) "
                                "tuple of int, int and int or bytes")
            try:
                probe.setsockopt(*option)
            except OSError as exc:
                raise ValueError(f"socket_options: setsockopt{option!r} failed: "
                                 f"{exc.strerror or exc}") from None
            checked.append(option)
    finally:
        probe.close()
    return tuple(checked)


def _check_delay(delay: object) -> float:
    """`happy_eyeballs_delay=`: seconds between staggered connect attempts; None or 0 tries
    the addresses one after the other."""
    if delay is None:
        return 0.0
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise ValueError(f"happy_eyeballs_delay must be a number of seconds >= 0 or None, "
                         f"not {delay!r}")
    return float(delay)

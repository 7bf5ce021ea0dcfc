"""Routes: how the connections of one pool key are made.

A client has a route for direct connections and one per proxy it uses (its `proxy=`, or the
environment's with `trust_env`). A route makes the pool key of each origin it serves, and the
drivers read what they need to open a connection from the key's route: the proxy (and whether
requests are forwarded to it or tunnelled through it), the TLS settings and the protocols.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._config import RETRY_KINDS, Limits, Retry, Timeout
from ._core.records import PoolKey
from ._mounts import UNSET, Mount, MountPatterns
from ._proxy import EnvProxies, Proxy
from ._tls import CertTypes, VerifyTypes, check_cert, check_verify, tls_identity

if TYPE_CHECKING:
    from ._core.http11 import Encoders, RequestEncoder
    from ._urls import Origin

__all__ = ["Route", "Router", "route_of"]

HTTP1: tuple[str, ...] = ("http/1.1",)


class Route:
    """Connect settings shared by the pool keys of one route (see the module docstring)."""

    __slots__ = ("cert", "explicit_proxy", "http1", "http2", "limits", "name",
                 "proxy", "retries", "status_retries", "timeout", "tls_id", "verify")

    def __init__(self, *, proxy: Proxy | None, verify: VerifyTypes, cert: CertTypes | None,
                 http1: bool, http2: bool, timeout: Timeout, retries: Retry,
                 limits: Limits | None = None, name: str | None = None,
                 explicit_proxy: bool = False) -> None:
        self.name = name  # the mount pattern, None for the client's own settings
        # A proxy (or None: direct) was chosen for this route: the environment's is not used.
        self.explicit_proxy = explicit_proxy or proxy is not None
        self.proxy = proxy
        self.verify = verify
        self.cert = cert
        self.http1 = http1
        self.http2 = http2
        self.timeout = timeout
        self.retries = retries
        # Status retries need a look at every response; skip it when the policy has none.
        self.status_retries = retries.allows("status") and bool(retries.status_forcelist)
        self.limits = limits  # a mount's own limits (None: the client's)
        self.tls_id = tls_identity(verify, cert)

    def replace(self, **changes: Any) -> Route:
        settings = {name: getattr(self, name) for name in (
            "proxy", "verify", "cert", "http1", "http2", "timeout", "retries", "limits", "name",
            "explicit_proxy")}
        settings.update(changes)
        return Route(**settings)

    def forwards(self, origin: Origin) -> bool:
        """Whether requests to `origin` are sent to the proxy as they are (plain http through
        an HTTP proxy: absolute-form), rather than through a tunnel (CONNECT, SOCKS)."""
        proxy = self.proxy
        return proxy is not None and not proxy.is_socks and not origin.is_tls

    def tunnels(self, origin: Origin) -> bool:
        """Whether connections to `origin` go through a tunnel the proxy opens."""
        return self.proxy is not None and not self.forwards(origin)

    def protocols(self, origin: Origin) -> tuple[str, ...]:
        """What a connection to `origin` may speak: ALPN's offer over TLS; over plain http,
        HTTP/2 only with `http1=False` (prior knowledge), never to a forward proxy."""
        if not self.http2 or (self.http1 and not origin.is_tls) or self.forwards(origin):
            return HTTP1
        return ("h2", "http/1.1") if self.http1 else ("h2",)

    def key(self, origin: Origin) -> PoolKey:
        proxy = self.proxy
        key = PoolKey(origin.key, proxy=None if proxy is None else proxy.key,
                      tls=self.tls_id if origin.is_tls else None,
                      protocols=self.protocols(origin))
        key.route = self  # type: ignore[attr-defined]  # read by the drivers
        # What the core reads of a mount (see PoolState): its limits, and the name that
        # groups its origins under its max_connections.
        key.limits = self.limits  # type: ignore[attr-defined]
        key.bucket = self.name  # type: ignore[attr-defined]
        return key

    def encoder(self, origin: Origin, encoders: Encoders, close: bool) -> RequestEncoder:
        """The HTTP/1.1 encoder of a connection of this route to `origin` (see Encoders);
        `close`: keep-alive is off for it."""
        proxy = self.proxy
        if proxy is None or not self.forwards(origin):
            return encoders.get(None, None, close)
        from ._proxy import basic_auth_header

        return encoders.get(proxy.key, basic_auth_header(proxy), close)


def route_of(key: PoolKey) -> Route:
    """The route `key` was made by."""
    route: Route = key.route  # type: ignore[attr-defined]
    return route


class Router:
    """Which route each origin takes: the most specific mount matching it, else the client's
    own settings; through the mount's proxy, the client's `proxy=`, or the environment's
    proxy for it (`trust_env`; NO_PROXY may exempt it), or directly."""

    def __init__(self, base: Route, *, trust_env: bool, uds: str | None,
                 mounts: Mapping[str, Mount] | None) -> None:
        self.base = base
        self._routes: dict[tuple[str | None, str | None], Route] = {}
        # The environment's proxies, read once (uds= dials directly, proxy= wins).
        self._env = (EnvProxies.from_environ(os.environ)
                     if trust_env and base.proxy is None and uds is None else None)
        self._mounts: MountPatterns[Route] | None = None
        if mounts:
            self._mounts = MountPatterns({pattern: self._mounted(pattern, mount)
                                          for pattern, mount in _check_mounts(mounts).items()})
            if uds is not None:
                raise ValueError("uds= dials one Unix socket for every request: mounts= "
                                 "cannot route requests elsewhere")

    @property
    def mounted(self) -> bool:
        return self._mounts is not None

    @property
    def retries(self) -> bool:
        """Whether any route may send a request again under its retry policy (the transparent
        resends after a keep-alive race are not retries)."""
        return any(route.retries.allows(kind) for route in self._all_routes()
                   for kind in RETRY_KINDS)

    @property
    def status_retries(self) -> bool:
        """Whether any route retries on statuses (else responses need no look)."""
        return any(route.status_retries for route in self._all_routes())

    def _all_routes(self) -> list[Route]:
        return [self.base, *(self._mounts.values() if self._mounts is not None else ())]

    def _mounted(self, pattern: str, mount: Mount) -> Route:
        """The route of `mount` (validated here: errors name the pattern)."""
        base = self.base
        changes: dict[str, Any] = {"name": pattern}
        if mount.verify is not UNSET:
            changes["verify"] = check_verify(mount.verify)
        verify = changes.get("verify", base.verify)
        if mount.cert is not UNSET or "verify" in changes:
            changes["cert"] = check_cert(base.cert if mount.cert is UNSET else mount.cert,
                                         verify)
        if mount.proxy is not UNSET:
            changes["proxy"] = Proxy.coerce(mount.proxy)
            changes["explicit_proxy"] = True
        for name in ("http2", "timeout", "retries", "limits"):
            value = getattr(mount, name)
            if value is not UNSET:
                changes[name] = value
        return base.replace(**changes)

    def route(self, origin: Origin) -> Route:
        route = self.base
        if self._mounts is not None:
            route = self._mounts.match(origin.scheme, origin.host, origin.port) or route
        if route.explicit_proxy or self._env is None:
            return route
        proxy = self._env.proxy_for(origin.scheme, origin.host, origin.port)
        if proxy is None:
            return route
        cached = self._routes.get((route.name, proxy.key))
        if cached is None:
            cached = self._routes[(route.name, proxy.key)] = route.replace(proxy=proxy)
        return cached


def _check_mounts(mounts: object) -> Mapping[str, Mount]:
    if not isinstance(mounts, Mapping):
        raise TypeError(f"mounts must be a mapping of pattern to poolhttp.Mount, not "
                        f"{type(mounts).__name__}")
    for pattern, mount in mounts.items():
        if not isinstance(mount, Mount):
            raise TypeError(f"mounts[{pattern!r}] must be a poolhttp.Mount, not "
                            f"{type(mount).__name__}")
    return mounts

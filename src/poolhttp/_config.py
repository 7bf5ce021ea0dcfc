"""Immutable configuration values: `Limits` and `Timeout`.

Each is a frozen value object: build a new one to change a setting. Wherever a `Timeout` is
accepted a plain number is too (`timeout=5.0` means `Timeout(5.0)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = ["IDEMPOTENT_METHODS", "Limits", "PoolConfig", "Retry", "Timeout", "TimeoutTypes"]


def _check_seconds(name: str, value: object, *, allow_none: bool) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return seconds


def _check_count(name: str, value: object, *, allow_none: bool, minimum: int) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Limits:
    """How many connections the pool may hold.

    - `max_connections` (100): open connections in all, connecting ones included. A request that
      finds the pool full waits in FIFO order, up to `Timeout.pool`.
    - `max_connections_per_host` (None: no limit but the total): open connections to one origin
      (scheme, host, port).
    - `max_keepalive_connections` (None: the same as `max_connections`): idle connections kept
      for reuse. Keeping it equal to `max_connections` means a workload that stays within
      `max_connections` never closes a reusable connection only to reopen one moments later.
      0 turns keep-alive off (aiohttp's `force_close=True`): an HTTP/1.1 connection is closed
      after its response even while other requests wait, and each of them gets a new one
      (within the limits, in arrival order); an HTTP/2 connection takes new streams while it
      carries others and is closed when its last one ends. `keepalive_expiry=0` does the same.
    - `keepalive_expiry` (15.0 s): an idle connection older than this is closed. 15 s bridges the
      pauses of a steady workload and stays below the idle time-outs of common load balancers and
      servers (60-75 s), so we usually close first instead of reusing a socket the server just
      dropped. A shorter `Keep-Alive: timeout=N` from the server wins.
    - `max_concurrent_streams` (100): requests one HTTP/2 connection carries at once, at most;
      the server's own SETTINGS_MAX_CONCURRENT_STREAMS wins when it is lower. Beyond it another
      connection opens (within the limits above) or the request waits.

    >>> Limits(max_connections=10, max_connections_per_host=2).max_keepalive_connections
    10
    >>> Limits(max_connections=0)
    Traceback (most recent call last):
      ...
    ValueError: max_connections must be >= 1, got 0
    """

    max_connections: int = 100
    max_connections_per_host: int | None = None
    max_keepalive_connections: int | None = None
    keepalive_expiry: float = 15.0
    max_concurrent_streams: int = 100

    def __post_init__(self) -> None:
        _check_count("max_connections", self.max_connections, allow_none=False, minimum=1)
        _check_count("max_connections_per_host", self.max_connections_per_host,
                     allow_none=True, minimum=1)
        _check_count("max_keepalive_connections", self.max_keepalive_connections,
                     allow_none=True, minimum=0)
        if self.max_keepalive_connections is None:
            object.__setattr__(self, "max_keepalive_connections", self.max_connections)
        expiry = _check_seconds("keepalive_expiry", self.keepalive_expiry, allow_none=False)
        object.__setattr__(self, "keepalive_expiry", expiry)
        _check_count("max_concurrent_streams", self.max_concurrent_streams, allow_none=False,
                     minimum=1)

    @property
    def keepalive_limit(self) -> int:
        """`max_keepalive_connections` resolved to an int."""
        assert self.max_keepalive_connections is not None  # set in __post_init__
        return self.max_keepalive_connections


class _Unset:
    """Marks a Timeout argument that was not given (None is a meaningful value: no limit)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


@dataclass(frozen=True, init=False)
class Timeout:
    """Time limits in seconds for each phase of a request; None means no limit.

    - `connect` (10 s): TCP connect and TLS handshake.
    - `read` (30 s): the longest silence while a response is expected (between bytes, not for
      the whole body).
    - `write` (30 s): the longest the server may refuse to take request bytes.
    - `pool` (30 s): the longest wait for a connection when the pool is full.
    - `total` (None): the whole exchange, from the call until the body is read to the end.

    The positional value sets every phase not given by keyword:

    >>> Timeout(5.0, pool=0.3)
    Timeout(connect=5.0, read=5.0, write=5.0, pool=0.3, total=None)
    >>> Timeout()
    Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0, total=None)
    """

    connect: float | None = field(default=10.0)
    read: float | None = field(default=30.0)
    write: float | None = field(default=30.0)
    pool: float | None = field(default=30.0)
    total: float | None = field(default=None)

    def __init__(self, default: float | _Unset | None = _UNSET, *,
                 connect: float | _Unset | None = _UNSET, read: float | _Unset | None = _UNSET,
                 write: float | _Unset | None = _UNSET, pool: float | _Unset | None = _UNSET,
                 total: float | None = None) -> None:
        defaults = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
        given = {"connect": connect, "read": read, "write": write, "pool": pool}
        for name, value in given.items():
            if isinstance(value, _Unset):
                value = defaults[name] if isinstance(default, _Unset) else default
            object.__setattr__(self, name, _check_seconds(f"Timeout.{name}", value,
                                                          allow_none=True))
        object.__setattr__(self, "total", _check_seconds("Timeout.total", total,
                                                         allow_none=True))

    @classmethod
    def coerce(cls, value: TimeoutTypes) -> Timeout:
        """Accept a `Timeout`, a number of seconds, or None (no limits at all).

        >>> Timeout.coerce(2.5).read
        2.5
        >>> Timeout.coerce(None).connect is None
        True
        """
        if isinstance(value, Timeout):
            return value
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return cls(value)
        raise TypeError(f"timeout must be a Timeout, a number of seconds or None, "
                        f"not {type(value).__name__}")


TimeoutTypes = Timeout | float | None


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_KINDS = ("connect", "read", "status")


def _method_set(methods: object) -> frozenset[str]:
    """`Retry.allowed_methods` as upper-cased names. A lone str is refused: iterating it would
    make "POST" the methods "P", "O", "S" and "T"."""
    if isinstance(methods, str):
        raise TypeError(f"Retry.allowed_methods must be a collection of method names, not a "
                        f"str: write allowed_methods={{{methods!r}}}, not {methods!r}")
    if isinstance(methods, bytes) or not isinstance(methods, Iterable):
        raise TypeError(f"Retry.allowed_methods must be a collection of method names, not "
                        f"{type(methods).__name__}")
    names = list(methods)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"Retry.allowed_methods must hold str method names, not "
                            f"{type(name).__name__} ({name!r})")
    return frozenset(name.upper() for name in names)


@dataclass(frozen=True)
class Retry:
    """An immutable retry policy: pass it (or an int, meaning `Retry(total=n)`) as `retries=`.

    - `total`: retries of any kind, at most (None: only the per-kind counts apply).
    - `connect`: retries after a failure to connect. The request never left, so every method
      is retried.
    - `read`: retries after the request was sent and no complete response came back (reset,
      time-out, protocol error). Only for `allowed_methods`, or a request that carries an
      `Idempotency-Key` header: resending anything else could run it twice.
    - `status`: retries after a response whose status is in `status_forcelist`.
    - Delay before retry n (1, 2, ...): `backoff_factor * 2 ** (n - 1)`, at most `backoff_max`,
      plus a random 0..`jitter` seconds so that many clients do not retry in step.
    - `respect_retry_after`: a `Retry-After` header (seconds or an HTTP date) on a 429/503-type
      response sets the delay instead, up to `retry_after_max`.
    - `raise_on_status`: when status retries run out, raise RetryError (True) or return the last
      response (False).

    `increment()` returns a new policy with one retry used; it never changes this one.

    >>> Retry(total=3, backoff_factor=0.5).increment("connect").total
    2
    """

    total: int | None = 3
    connect: int | None = None
    read: int | None = None
    status: int | None = None
    backoff_factor: float = 0.25
    backoff_max: float = 30.0
    jitter: float = 0.25
    status_forcelist: frozenset[int] = RETRY_STATUSES
    allowed_methods: frozenset[str] = IDEMPOTENT_METHODS
    respect_retry_after: bool = True
    retry_after_max: float = 120.0
    raise_on_status: bool = True
    history: tuple[str, ...] = ()  # the kind of each retry used so far

    def __post_init__(self) -> None:
        for name in ("total", "connect", "read", "status"):
            _check_count(f"Retry.{name}", getattr(self, name), allow_none=True, minimum=0)
        for name in ("backoff_factor", "backoff_max", "jitter", "retry_after_max"):
            _check_seconds(f"Retry.{name}", getattr(self, name), allow_none=False)
        object.__setattr__(self, "status_forcelist", frozenset(self.status_forcelist))
        object.__setattr__(self, "allowed_methods", _method_set(self.allowed_methods))

    @classmethod
    def coerce(cls, value: Retry | int | None) -> Retry:
        """Accept a `Retry`, an int (`Retry(total=n)`), or None (no retries).

        >>> Retry.coerce(5).total
        5
        >>> Retry.coerce(None).allows("connect")
        False
        """
        if isinstance(value, Retry):
            return value
        if value is None:
            return cls(total=0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"retries must be a poolhttp.Retry or an int, not "
                            f"{type(value).__name__}")
        return cls(total=value)

    def increment(self, kind: str) -> Retry:
        """This policy with one retry of `kind` ("connect", "read" or "status") used.

        Raises ValueError when no retry of `kind` is left: check `allows(kind)` first.

        >>> Retry(total=0).increment("read")
        Traceback (most recent call last):
          ...
        ValueError: no read retry left in this policy (total=0); check allows('read') first
        """
        if not self.allows(kind):
            spent = self.total is not None and self.total <= 0
            left = f"total={self.total}" if spent else f"{kind}={getattr(self, kind)}"
            raise ValueError(f"no {kind} retry left in this policy ({left}); "
                             f"check allows({kind!r}) first")
        changes: dict[str, object] = {"history": (*self.history, kind)}
        if self.total is not None:
            changes["total"] = self.total - 1
        specific = getattr(self, kind)
        if specific is not None:
            changes[kind] = specific - 1
        return replace(self, **changes)  # type: ignore[arg-type]

    def allows(self, kind: str) -> bool:
        """Whether one more retry of `kind` ("connect", "read" or "status") is left."""
        if kind not in RETRY_KINDS:
            raise ValueError(f"unknown retry kind {kind!r}; the kinds are "
                             f"{', '.join(map(repr, RETRY_KINDS))}")
        if self.total is not None and self.total <= 0:
            return False
        specific = getattr(self, kind)
        return specific is None or specific > 0

    def is_retryable_method(self, method: str, has_idempotency_key: bool) -> bool:
        return method in self.allowed_methods or has_idempotency_key

    def backoff(self, random_fraction: float) -> float:
        """Seconds to wait before the next retry; `random_fraction` is in [0, 1).

        >>> used_two = Retry(backoff_factor=0.5, jitter=0.2).increment("read").increment("read")
        >>> used_two.backoff(0.0), used_two.backoff(0.5)
        (1.0, 1.1)
        """
        retries = len(self.history)
        if retries == 0:
            return 0.0
        delay = min(self.backoff_max, self.backoff_factor * 2.0 ** (retries - 1))
        return float(delay + self.jitter * random_fraction)


@dataclass(frozen=True)
class PoolConfig:
    """What a pool needs of its client's settings (the pools never see the client itself)."""

    limits: Limits
    dns_ttl: float
    family: int
    local_address: str | None
    socket_options: tuple[tuple[int, int, int | bytes], ...] = ()
    uds: str | None = None  # connect every request through this Unix socket
    tls_resumption: bool = True
    happy_eyeballs_delay: float = 0.25  # between staggered connect attempts (RFC 8305)

"""Immutable configuration values: `Limits` and `Timeout`.

Each is a frozen value object: build a new one to change a setting. Wherever a `Timeout` is
accepted a plain number is too (`timeout=5.0` means `Timeout(5.0)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Limits", "Timeout", "TimeoutTypes"]


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
    - `keepalive_expiry` (15.0 s): an idle connection older than this is closed. 15 s bridges the
      pauses of a steady workload and stays below the idle time-outs of common load balancers and
      servers (60-75 s), so we usually close first instead of reusing a socket the server just
      dropped. A shorter `Keep-Alive: timeout=N` from the server wins.

    >>> Limits(max_connections=10, max_connections_per_host=2).max_keepalive_connections
    10
    """

    max_connections: int = 100
    max_connections_per_host: int | None = None
    max_keepalive_connections: int | None = None
    keepalive_expiry: float = 15.0

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
        """Accept a `Timeout`, a number of seconds, or None (no limits at all)."""
        if isinstance(value, Timeout):
            return value
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return cls(value)
        raise TypeError(f"timeout must be a Timeout, a number of seconds or None, "
                        f"not {type(value).__name__}")


TimeoutTypes = Timeout | float | None

"""Defaults and argument checking shared by `fetch_many` and `fetch_many_sync`.

Why these defaults:
- `concurrency` 64: enough requests in flight to hide network latency for most crawls (at 50 ms
  per request that is ~1,300 requests/s) while staying well under the default client pool (100
  connections) and the usual 1,024 open-file limit, with room for other sockets and files.
- `per_host` 8: polite to any one server. Browsers open 6 connections per host; many servers and
  CDNs throttle or ban clients that open dozens. Raise it for hosts you own.
- `backlog` 10,000: jobs parked for saturated origins while other origins proceed, and read
  ahead while every slot is busy, at a few hundred bytes each (a few MB). The read-ahead lets a
  freed slot go on with its origin (and its idle connection): over 500 origins visited in turn
  through 16 connections, 96% of requests reuse one with 10,000, 75% with 1,000 (simulated in
  tests/bulk/test_bulk_window.py). See `_window` for what it bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poolhttp import URL, Limits, Timeout

__all__ = ["DEFAULT_BACKLOG", "DEFAULT_CONCURRENCY", "DEFAULT_PER_HOST", "Options", "resolve"]

DEFAULT_CONCURRENCY = 64
DEFAULT_PER_HOST = 8
DEFAULT_BACKLOG = 10_000


@dataclass(frozen=True)
class Options:
    concurrency: int
    per_host: int
    rate: float | None
    backlog: int
    keep_bodies: bool
    timeout: Timeout | None
    base_url: URL | None
    #: Whether the client may retry: else every request is sent once and needs no counter.
    retries: bool


def resolve(client: Any, *, concurrency: int | None, per_host: int | None, rate: float | None,
            backlog: int | None, keep_bodies: bool, timeout: Timeout | float | None) -> Options:
    """Check the arguments against each other and the client's limits; fill defaults.

    The window must fit in the client's pool: a request the pool cannot serve at once would
    queue inside the pool and could fail with PoolTimeout instead of waiting in the window.
    Defaults shrink to fit the client; explicit values that do not fit are an error.
    """
    limits = getattr(client, "limits", None)
    max_total = limits.max_connections if isinstance(limits, Limits) else None
    max_host = limits.max_connections_per_host if isinstance(limits, Limits) else None
    if concurrency is None:
        concurrency = min(DEFAULT_CONCURRENCY, max_total or DEFAULT_CONCURRENCY)
    _check_int("concurrency", concurrency)
    if per_host is None:
        per_host = min(DEFAULT_PER_HOST, concurrency, max_host or DEFAULT_PER_HOST)
    _check_int("per_host", per_host)
    if max_total is not None and concurrency > max_total:
        raise ValueError(f"concurrency={concurrency} exceeds the client's "
                         f"max_connections={max_total}: create the client with "
                         f"poolhttp.Limits(max_connections={concurrency}) or lower concurrency")
    if max_host is not None and per_host > max_host:
        raise ValueError(f"per_host={per_host} exceeds the client's max_connections_per_host="
                         f"{max_host}: raise that limit or lower per_host")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or math.isnan(rate) or rate <= 0 or math.isinf(rate)):
        raise ValueError(f"rate must be a number of requests per second > 0 (or None for no "
                         f"limit), not {rate!r}")
    backlog = DEFAULT_BACKLOG if backlog is None else backlog
    _check_int("backlog", backlog)
    if not isinstance(keep_bodies, bool):
        raise TypeError(f"keep_bodies must be a bool, not {type(keep_bodies).__name__}")
    base_url = getattr(client, "base_url", None)
    return Options(concurrency=concurrency, per_host=min(per_host, concurrency),
                   rate=None if rate is None else float(rate), backlog=backlog,
                   keep_bodies=keep_bodies,
                   timeout=None if timeout is None else Timeout.coerce(timeout),
                   base_url=base_url if isinstance(base_url, URL) else None,
                   retries=_may_retry(client))


def _may_retry(client: Any) -> bool:
    router = getattr(client, "_router", None)
    return True if router is None else bool(router.retries)  # not ours: count to be sure


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


class AttemptCounter:
    """A `trace=` callback counting a request's attempts: the first, plus one for each retry
    of the client's `Retry` policy, so never more than `Retry.total + 1`. The transparent
    resends (after a keep-alive race, of a refused HTTP/2 stream) are not attempts of their
    own: they repeat one that met a connection the server had given up.

    Every event goes on to `inner`, the client's own `trace=` (a per-request trace replaces
    the client's). Made only when the client may retry: each event costs a call (four per
    request, 2.8 us), and without retries every request is one attempt."""

    __slots__ = ("inner", "sent")

    def __init__(self, inner: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.sent = 1
        self.inner = inner

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "request.retry" and info.get("kind") not in _TRANSPARENT:
            self.sent += 1
        if self.inner is not None:
            self.inner(event, info)


def attempt_counter(client: Any, options: Options) -> AttemptCounter | None:
    """A counter for one request of a bulk run, or None when the client never retries."""
    return AttemptCounter(getattr(client, "trace", None)) if options.retries else None


def attempts(counter: AttemptCounter | None) -> int:
    """The attempts a request took: 1 when no counter was needed."""
    return 1 if counter is None else counter.sent


_TRANSPARENT = frozenset({"stale", "unprocessed"})

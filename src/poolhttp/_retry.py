"""One request's retries, decided without I/O.

Both clients run the same loop: send; on an error call `after_error`, on a response call
`after_response`; each answers with the delay before the next attempt or ends the loop (by
raising, or by returning None for "keep this response"). The clients only sleep and resend.

Two kinds of retry live here:
- The keep-alive race. A request that fails on a reused connection before any byte of a
  response arrived most likely met a connection the server had just closed. It is resent once,
  at once, if it is safe to resend (an idempotent method or an `Idempotency-Key` header);
  otherwise `StaleConnectionError` says it may not have been processed. The resend goes out on
  a new connection (`fresh`), and the idle connections to that origin are closed: a server
  that dropped one has usually dropped the others that waited as long. This happens whatever
  the `Retry` policy says, and counts in `stats().retries`.
- A request the server did not process: its HTTP/2 stream was refused (REFUSED_STREAM) or
  left out by a GOAWAY (`StreamReset.processed` False, RFC 9113 section 8.7). It is resent at
  once whatever its method (up to `UNPROCESSED_RESENDS` times), if its body can be replayed.
- The `Retry` policy: connect, read and status retries with backoff.
"""

from __future__ import annotations

import random
from datetime import timezone
from email.utils import parsedate_to_datetime

from ._config import Retry
from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    HTTPError,
    HTTPStatusError,
    PoolClosed,
    PoolTimeout,
    RetryError,
    ServerDisconnected,
    StaleConnectionError,
    StreamReset,
    TotalTimeout,
    TransportError,
)
from ._models import Request, Response

__all__ = ["UNPROCESSED_RESENDS", "RetryPlan"]

UNPROCESSED_RESENDS = 3  # a server refusing a request this often means it, not a race


class RetryPlan:
    """The retry state of one request (created on its first failure, so it costs nothing on
    the fast path).

    A failed connect is retried whatever the method, since the request never left:

    >>> from poolhttp import ConnectError, Request, Retry
    >>> plan = RetryPlan(Retry(total=1, backoff_factor=0.5, jitter=0.0),
    ...                  Request("POST", "http://example.com/"))
    >>> plan.after_error(ConnectError("connection refused", origin="http://example.com:80"))
    0.5
    >>> plan.after_error(ConnectError("connection refused", origin="http://example.com:80"))
    Traceback (most recent call last):
      ...
    poolhttp._exceptions.RetryError: 2 attempts failed; the last one: connection refused
    """

    __slots__ = ("_idempotent", "_resendable", "errors", "fresh", "kind", "policy",
                 "retried_stale", "unprocessed")

    def __init__(self, policy: Retry, request: Request) -> None:
        self.policy = policy
        has_key = any(name.lower() == b"idempotency-key" for name, _ in request.extra_headers)
        self._idempotent = policy.is_retryable_method(request.method, has_key)
        self._resendable = request.stream is None  # a streamed body cannot be replayed
        self.errors: list[BaseException] = []
        self.retried_stale = False
        self.unprocessed = 0  # resends of a request the server said it did not process
        self.fresh = False  # the next attempt must not reuse an idle connection
        #: What the coming retry is: "connect", "read" or "status" (the policy's, counted in
        #: its budget), "stale" (the keep-alive race) or "unprocessed" (a refused stream).
        self.kind = ""

    def after(self, outcome: Response | TransportError, wall_now: float) -> float | None:
        """The step both clients' request loops ask after an attempt that did not simply
        succeed: seconds to wait before the next attempt, None for "return this response",
        or it raises what the caller should see."""
        if isinstance(outcome, Response):
            return self.after_response(outcome, wall_now)
        return self.after_error(outcome)

    def after_error(self, error: TransportError) -> float:
        """Seconds to wait before the next attempt; raises what the caller should see."""
        self.errors.append(error)
        self.fresh = False
        if isinstance(error, StreamReset) and not error.processed and self._resendable \
                and self.unprocessed < UNPROCESSED_RESENDS:
            self.unprocessed += 1
            self.kind = "unprocessed"
            return 0.0
        if isinstance(error, ServerDisconnected) and error.reused and not error.response_started:
            if self._idempotent and self._resendable and not self.retried_stale:
                self.retried_stale = self.fresh = True
                self.kind = "stale"
                return 0.0
            if not self._idempotent:
                raise StaleConnectionError(
                    f"{error} -- the connection had been idle in the pool and the server closed "
                    "it as the request went out; it was not resent because the method is not "
                    "idempotent, so the server may or may not have processed it",
                    origin=error.origin, request_sent=error.request_sent, reused=True) from error
        if isinstance(error, TotalTimeout) or not self._resendable:
            self._give_up(error)
        kind = "connect" if isinstance(error, (ConnectError, ConnectTimeout)) else "read"
        if kind == "read" and not self._idempotent:
            self._give_up(error)
        if not self.policy.allows(kind) or (isinstance(error, HTTPError) and _is_final(error)):
            self._give_up(error)
        self.policy = self.policy.increment(kind)
        self.kind = kind
        return self.policy.backoff(random.random())

    @property
    def attempts(self) -> int:
        """Attempts made so far (each failure or retried response is one)."""
        return len(self.errors)

    def after_response(self, response: Response, wall_now: float) -> float | None:
        """None to keep `response`; else seconds to wait before retrying (the caller closes
        the response first)."""
        policy = self.policy
        if response.status_code not in policy.status_forcelist or not self._idempotent \
                or not self._resendable:
            return None
        if not policy.allows("status"):
            if policy.history and policy.raise_on_status:
                self.errors.append(_status_error(response))
                raise RetryError(
                    f"{response.request.method} {response.request.url} still answered "
                    f"{response.status_code} after {len(policy.history)} retries",
                    origin=str(response.request.url.origin), errors=self.errors)
            return None
        self.errors.append(_status_error(response))
        self.policy = policy.increment("status")
        self.kind = "status"
        delay = self.policy.backoff(random.random())
        if policy.respect_retry_after:
            after = retry_after_seconds(response.headers.get("retry-after"), wall_now)
            if after is not None:
                delay = min(after, policy.retry_after_max)
        return delay

    def _give_up(self, error: TransportError) -> None:
        if len(self.errors) == 1:
            raise error  # no retry was made: the caller sees the error itself
        raise RetryError(f"{len(self.errors)} attempts failed; the last one: {error}",
                         origin=error.origin, errors=self.errors) from error


def _is_final(error: HTTPError) -> bool:
    """Errors no retry can help: the pool is closed, or saturated for longer than allowed."""
    return isinstance(error, (PoolClosed, PoolTimeout))


def _status_error(response: Response) -> HTTPStatusError:
    return HTTPStatusError(f"{response.status_code} {response.reason_phrase} for "
                           f"{response.request.method} {response.request.url}",
                           request=response.request, response=response)


def retry_after_seconds(value: str | None, wall_now: float) -> float | None:
    """Seconds a `Retry-After` value asks for: delta-seconds (ASCII digits only) or an HTTP
    date; None if absent or unreadable. A date in the past asks for no wait. HTTP dates are in
    GMT, so a date without a zone (the asctime form) is read as GMT, never as local time.

    >>> retry_after_seconds("120", wall_now=0.0)
    120.0
    >>> retry_after_seconds("Thu, 01 Jan 1970 00:02:00 GMT", wall_now=60.0)
    60.0
    >>> retry_after_seconds("Thu, 01 Jan 1970 00:02:00 GMT", wall_now=500.0)
    0.0
    >>> retry_after_seconds("Thu Jan  1 00:02:00 1970", wall_now=60.0)
    60.0
    >>> retry_after_seconds("soon", wall_now=0.0) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone takes "²" and "١٢"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # no zone (asctime form) or "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - wall_now)

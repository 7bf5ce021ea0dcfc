"""What goes into the bulk fetcher (`BulkRequest`) and what comes out (`BulkResult`).

Input items are validated one at a time as they are pulled: a bad item becomes a failed result
carrying its key, never an exception that would end the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from poolhttp import URL, Headers, HTTPError, InvalidRequest, Response, RetryError

__all__ = ["BulkItem", "BulkRequest", "BulkResult", "Job", "digest_of", "failed", "prepare",
           "succeeded"]

# Explicit aliases: `poolhttp` imports this module while it is being initialised, and mypy does
# not infer an alias from names that come through an import cycle.
HeaderArg: TypeAlias = (Headers | Mapping[str, str] | Sequence[tuple[str, str]]
                        | Sequence[tuple[bytes, bytes]] | None)


@dataclass(frozen=True)
class BulkRequest:
    """One request of a bulk run, when a bare URL is not enough.

    `key` is yours: it comes back on the result, so results (which arrive in completion order)
    can be matched to inputs. When it is None the item's position in the input (0, 1, ...) is
    used. `body` is sent as is; a str is encoded as UTF-8.
    """

    url: str | URL
    method: str = "GET"
    headers: HeaderArg = None
    body: bytes | str | None = None
    key: Any = None


#: An input item: a URL string, a `poolhttp.URL` or a `BulkRequest`.
BulkItem: TypeAlias = str | URL | BulkRequest


@dataclass
class BulkResult:
    """The outcome of one input item; exactly one is produced per item, in completion order.

    - `status`/`headers` are None when no response arrived; `error_type` and `error` then name
      the failure ("ConnectError", "cannot connect to ..."). An HTTP error status (404, 503)
      is a response, not an error: check `status`.
    - `body` is the response body when bodies are kept, else None; `size` and `sha256` are
      always filled for a response (sha256 as lower-case hex).
    - `elapsed` is seconds from the first attempt's start to the end of the body, retries
      included; `attempts` is how many times the retry policy sent it (0 if it never was).
    - `origin` is the request's origin key (`"https://example.org:443"`; None for an item
      that is not a usable URL); `final_url` the URL of the response, after redirects when the
      client follows them (`url` itself when there were none; None without a response).
    """

    key: Any
    url: str
    method: str = "GET"
    status: int | None = None
    headers: Headers | None = None
    body: bytes | None = None
    size: int = 0
    sha256: str | None = None
    elapsed: float = 0.0
    attempts: int = 0
    error_type: str | None = None
    error: str | None = None
    origin: str | None = None
    final_url: str | None = None

    @property
    def ok(self) -> bool:
        """A response arrived (of any status)."""
        return self.error_type is None


class Job:
    """An input item, validated and ready to send."""

    __slots__ = ("body", "headers", "key", "method", "origin", "url")

    def __init__(self, key: Any, url: URL, method: str, headers: list[tuple[bytes, bytes]] | None,
                 body: bytes | None) -> None:
        self.key = key
        self.url = url
        self.method = method
        self.headers = headers
        self.body = body
        self.origin = url.origin.key


def prepare(item: object, index: int, base_url: URL | None) -> Job | BulkResult:
    """Validate one input item; a failed result (never an exception) when it is unusable."""
    if isinstance(item, BulkRequest):
        key = index if item.key is None else item.key
        raw_url: object = item.url
    else:
        key, raw_url = index, item
    try:
        url = _to_url(raw_url, base_url)
        if not isinstance(item, BulkRequest):
            return Job(key, url, "GET", None, None)
        if not isinstance(item.method, str) or not item.method:
            raise InvalidRequest(f"BulkRequest.method must be a non-empty str, not "
                                 f"{item.method!r}")
        method = item.method.upper()  # the client checks that it is a valid token
        headers = Headers(item.headers).raw if item.headers else None
        body = item.body.encode("utf-8") if isinstance(item.body, str) else item.body
        if body is not None and not isinstance(body, bytes):
            raise InvalidRequest(f"BulkRequest.body must be bytes or str, not "
                                 f"{type(body).__name__}")
        return Job(key, url, method, headers, body)
    except (HTTPError, ValueError, TypeError) as exc:
        shown = str(raw_url) if isinstance(raw_url, (str, URL)) else repr(raw_url)
        method = item.method if isinstance(item, BulkRequest) and isinstance(item.method, str) \
            else "GET"
        return failed(key, shown, method, exc, 0.0, 0)


def _to_url(value: object, base_url: URL | None) -> URL:
    if isinstance(value, URL):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(f"an input item must be a URL string, a poolhttp.URL or a "
                             f"BulkRequest, not {type(value).__name__}")
    if base_url is not None and "://" not in value:
        return base_url.join(value)
    return URL(value)


def succeeded(job: Job, response: Response, body: bytes | None, size: int, digest: str,
              elapsed: float, attempts: int) -> BulkResult:
    url = str(job.url)
    return BulkResult(key=job.key, url=url, method=job.method,
                      status=response.status_code, headers=response.headers, body=body,
                      size=size, sha256=digest, elapsed=elapsed, attempts=attempts,
                      origin=job.origin,
                      final_url=str(response.url) if response.history else url)


def failed(key: Any, url: str, method: str, exc: BaseException, elapsed: float,
           attempts: int, origin: str | None = None) -> BulkResult:
    """A result for a request that got no response; a RetryError is named by its last cause
    (`attempts` already says that it was retried)."""
    shown: BaseException = exc
    if isinstance(exc, RetryError) and exc.last_error is not None:
        shown = exc.last_error
    text = str(exc) or type(exc).__name__
    return BulkResult(key=key, url=url, method=method, elapsed=elapsed, attempts=attempts,
                      error_type=type(shown).__name__, error=text, origin=origin)


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


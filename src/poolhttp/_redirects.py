"""Following redirects, decided without I/O: a step of the request loop.

After each response the loop asks `next_request(request, response)`: None means "return this
response"; otherwise it is the request for the next hop. The rules (RFC 9110 section 15.4):

- 301 and 302 turn a POST into a GET; 303 turns anything but HEAD into a GET; a request
  turned into a GET loses its body and its Content-* headers.
- 307 and 308 keep the method and the body. A streamed body was consumed by the first hop and
  cannot be sent again: that raises `RequestNotReplayable` instead of sending an empty body.
- `Location` is resolved against the request's URL by RFC 3986 section 5 (`URL.resolve`); the
  request's fragment carries over when the Location has none. A Location of another scheme
  than http or https is refused (InvalidURL).
- When the origin changes, `Authorization` and `Proxy-Authorization` are dropped (so https ->
  http never carries credentials), and `Cookie` always is: the loop derives it again from the
  jar for the new URL.
- More than `max_redirects` hops raise `TooManyRedirects`, naming the chain's length and the
  last URL.
"""

from __future__ import annotations

from ._exceptions import InvalidURL, RequestNotReplayable, TooManyRedirects
from ._models import Request, Response
from ._urls import URL

__all__ = ["REDIRECT_STATUSES", "RedirectPlan"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({b"authorization", b"proxy-authorization"})


class RedirectPlan:
    """The redirects of one request: how many so far, and the next hop's request."""

    __slots__ = ("hops", "max_redirects")

    def __init__(self, max_redirects: int) -> None:
        self.max_redirects = max_redirects
        self.hops = 0

    def next_request(self, request: Request, response: Response) -> Request | None:
        if response.status_code not in REDIRECT_STATUSES:
            return None
        location = response.headers.get("location")
        if location is None:
            return None  # nothing to follow: the response is the answer
        self.hops += 1
        if self.hops > self.max_redirects:
            raise TooManyRedirects(
                f"{self.hops} redirects in a row, more than max_redirects="
                f"{self.max_redirects}; the last one from {request.url} to {location!r}",
                origin=request.url.origin.key)
        target = _target(request.url, location)
        method = _method(request.method, response.status_code)
        keeps_body = method == request.method
        if keeps_body and request.stream is not None:
            raise RequestNotReplayable(
                f"{response.status_code} redirect of {request.method} {request.url} to "
                f"{target}: its body was streamed and cannot be sent again (pass bytes to "
                "have it replayed)", origin=request.url.origin.key)
        headers = _headers(request, target, keeps_body)
        return Request.build(method, target, headers, request._base_headers,
                             request.content if keeps_body else None, None)


def _target(url: URL, location: str) -> URL:
    try:
        target = url.resolve(location.strip())
    except InvalidURL as exc:
        raise InvalidURL(f"cannot follow the redirect from {url} to {location!r}: {exc}",
                         url=location) from exc
    if not target.fragment and url.fragment:
        target = URL(str(target) + "#" + url.fragment)
    return target


def _method(method: str, status: int) -> str:
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def _headers(request: Request, target: URL,
             keeps_body: bool) -> list[tuple[bytes, bytes]]:
    same_origin = target.origin == request.url.origin
    kept = []
    for name, value in request.extra_headers:
        lower = name.lower()
        if lower == b"cookie" or lower == b"host":
            continue
        if not same_origin and lower in _CREDENTIALS:
            continue
        if not keeps_body and lower.startswith(b"content-"):
            continue
        kept.append((name, value))
    return kept

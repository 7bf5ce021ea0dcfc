"""The steps around a request's attempts: cookies, auth, redirects and event hooks.

Both clients run them the same way, so they are one generator, `Steps.flow()`, that does no
I/O: it yields each request to send and is sent back its response; what it returns is the
response the caller gets. The client drives it (AsyncClient awaits, Client blocks):

    flow = steps.flow(request, ...)
    request = next(flow)
    loop:
        run the request hooks; response = send(request)  (the retrying loop); response hooks
        try: request = flow.send(response)  except StopIteration as end: return end.value
        read and close that response (it is in the history, or an auth challenge)

Per hop: the `Cookie` header is derived from the jar for that hop's URL (with the request's
own `cookies=`); auth runs its flow (a 401 may be answered with a new request); `Set-Cookie`
of every response is stored; a redirect (when followed) gives the next hop. Auth applies to
hops on the first request's origin only, and so do the request's own `cookies=`: credentials
never follow a redirect to another origin; credentials in a URL's userinfo are Basic auth for
that URL's hop.

A request with none of these (no redirects to follow, no auth, an empty jar and no hooks) never
enters the flow: the client sends it directly and only looks for `Set-Cookie` in the raw header
block of its response.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union
from urllib.parse import unquote

from ._cookies import Cookies, CookieTypes
from ._exceptions import InvalidRequest
from ._models import Request, Response
from ._redirects import RedirectPlan

if TYPE_CHECKING:
    from ._auth import Auth

__all__ = ["AuthTypes", "Hook", "Steps", "coerce_auth"]

Hook = Callable[..., Any]  # called with the Request or the Response; may return an awaitable
AuthTypes = Union["Auth", tuple[str, str], None]
Flow = Generator[Request, Response, Response]
_JAR_LOCK = threading.Lock()


def coerce_auth(auth: object) -> Auth | None:
    """`auth=` as given: None, a (username, password) pair, or an Auth object."""
    from ._auth import Auth, BasicAuth

    if auth is None or isinstance(auth, Auth):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2 and all(
            isinstance(part, (str, bytes)) for part in auth):
        return BasicAuth(*auth)
    raise InvalidRequest(f"auth= must be a (username, password) tuple or a poolhttp.Auth "
                         f"(BasicAuth, DigestAuth, your own), not {type(auth).__name__}")


def _hooks(event_hooks: Mapping[str, Sequence[Hook]] | None) -> tuple[list[Hook], list[Hook]]:
    if event_hooks is None:
        return [], []
    if not isinstance(event_hooks, Mapping):
        raise InvalidRequest(f"event_hooks= must be a dict like {{'request': [...], "
                             f"'response': [...]}}, not {type(event_hooks).__name__}")
    unknown = set(event_hooks) - {"request", "response"}
    if unknown:
        raise InvalidRequest(f"unknown event hook kinds {sorted(unknown)}; there are "
                             "'request' and 'response'")
    lists = []
    for kind in ("request", "response"):
        hooks = list(event_hooks.get(kind, ()))
        if not all(callable(hook) for hook in hooks):
            raise InvalidRequest(f"every {kind} hook must be callable")
        lists.append(hooks)
    return lists[0], lists[1]


class Steps:
    """The client's settings for the steps, and the flow that applies them to a request."""

    def __init__(self, *, follow_redirects: bool, max_redirects: int,
                 cookies: CookieTypes | None, auth: object,
                 event_hooks: Mapping[str, Sequence[Hook]] | None) -> None:
        if not isinstance(follow_redirects, bool):
            raise InvalidRequest(f"follow_redirects must be True or False, not "
                                 f"{follow_redirects!r}")
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int) or (
                max_redirects < 0):
            raise InvalidRequest(f"max_redirects must be an int >= 0, not {max_redirects!r}")
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        # The jar is made on first use (cookies given, a Set-Cookie seen, `client.cookies`).
        self._jar: Cookies | None = None if cookies is None else Cookies(cookies)
        self.auth = coerce_auth(auth)
        self.request_hooks, self.response_hooks = _hooks(event_hooks)
        # Nothing to do for a request with no settings of its own (see `idle`).
        self._quiet = not (follow_redirects or self.auth is not None or self.request_hooks
                           or self.response_hooks)

    @property
    def cookies(self) -> Cookies:
        if self._jar is None:
            with _JAR_LOCK:  # threads of one Client may get here together: one jar for all
                if self._jar is None:
                    self._jar = Cookies()
        return self._jar

    @cookies.setter
    def cookies(self, value: Cookies) -> None:
        self._jar = value

    def idle(self, request: Request) -> bool:
        """Whether `request`, with no step settings of its own, can skip the flow: nothing to
        follow, no auth, no hooks, no cookie to send. (Its response is still looked at for
        Set-Cookie: see `sniff`.)"""
        jar = self._jar
        return (self._quiet and (jar is None or not jar.jar._cookies)  # type: ignore[attr-defined]
                and not request.url.userinfo)

    def sniff(self, response: Response) -> None:
        """Store what a response sent outside the flow sets, if it sets anything: a look at
        its raw header block, not split, for "Set-Cookie" in its usual spellings (the jar
        reads the headers properly when one is there)."""
        raw = response._raw_headers
        if b"ookie:" in raw or b"OOKIE:" in raw:
            self.cookies.extract(response)

    def flow(self, request: Request, follow: bool, auth: Auth | None,
             cookies: Cookies | None) -> Flow:
        history: list[Response] = []
        redirects = RedirectPlan(self.max_redirects) if follow else None
        first = request.url.origin
        while True:
            same_origin = request.url.origin == first
            hop_auth = auth if same_origin else None
            if request.url.userinfo:
                hop_auth = _userinfo_auth(request.url.userinfo)
            # A request's own cookies= go to its own origin only, like its auth.
            response = yield from self._hop(request, hop_auth, cookies if same_origin else None)
            response.history = list(history)
            following = redirects.next_request(request, response) if redirects else None
            if following is None:
                return response
            history.append(response)
            request = following

    def _hop(self, request: Request, auth: Auth | None, cookies: Cookies | None) -> Flow:
        """One hop: cookies in, the auth flow (if any), cookies out."""
        self._add_cookies(request, cookies)
        if auth is None:
            response = yield request
            self.cookies.extract(response)
            return response
        challenges = auth.auth_flow(request)
        request = next(challenges)
        while True:
            self._add_cookies(request, cookies)
            response = yield request
            self.cookies.extract(response)
            try:
                request = challenges.send(response)
            except StopIteration:
                return response

    def _add_cookies(self, request: Request, cookies: Cookies | None) -> None:
        value = self.cookies.header_for(request, cookies)
        if value is not None:
            request.headers["Cookie"] = value


def _userinfo_auth(userinfo: str) -> Auth:
    from ._auth import BasicAuth

    user, _, password = userinfo.partition(":")
    return BasicAuth(unquote(user), unquote(password))

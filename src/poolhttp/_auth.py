"""Authentication as generator flows, without I/O: Basic (RFC 7617) and Digest (RFC 7616).

An auth flow is a generator. The client calls `auth_flow(request)`, sends each request the
flow yields and sends the response back in; the flow ends (StopIteration) when the last
response is final, and that response is the one the caller gets:

    flow = auth.auth_flow(request)
    request = next(flow)
    while True:
        response = send(request)
        try:
            request = flow.send(response)
        except StopIteration:
            break                      # `response` is the answer

A flow sets headers by editing `request.headers` (the connection encodes that view), and may
yield the same Request again. `requires_response_body` says whether the flow reads the body
of the responses it is sent; when False, the client may release them unread.

Errors: a Digest challenge that cannot be answered (malformed, no realm or nonce, an
algorithm or qop this module does not implement) raises `AuthError`, which carries the 401
response: the credentials were never tried, so returning the 401 would read like a refusal.
A 401 without any Digest challenge, and a 401 to our answer (wrong credentials), are
returned as they are.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from ._exceptions import HTTPError, InvalidRequest

if TYPE_CHECKING:
    from ._models import Request, Response

__all__ = ["Auth", "AuthError", "AuthFlow", "BasicAuth", "DigestAuth", "DigestChallenge",
           "digest_response", "parse_challenges", "parse_digest_challenges"]

AuthFlow = Generator["Request", "Response", None]

_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")


class AuthError(HTTPError):
    """The server's authentication challenge cannot be answered; `response` is the 401."""

    def __init__(self, message: str, *, response: Response | None = None) -> None:
        origin = str(response.request.url.origin) if response is not None else None
        super().__init__(message, origin=origin)
        self.response = response


class Auth:
    """Base class of auth flows. Subclasses override `auth_flow`; this one sends the request
    unchanged."""

    requires_response_body: bool = False

    def auth_flow(self, request: Request) -> AuthFlow:
        yield request


# -- Basic ------------------------------------------------------------------------------------


def _credential(value: str | bytes, what: str) -> bytes:
    """`value` as UTF-8 bytes (bytes are taken as they are), refusing control characters."""
    if isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, bytes):
        raw = value
    else:
        raise InvalidRequest(f"the {what} must be str or bytes, not {type(value).__name__}")
    if _CTL_RE.search(raw.decode("latin-1")):
        raise InvalidRequest(f"the {what} holds a control character (RFC 7617 forbids them)")
    return raw


class BasicAuth(Auth):
    """`Authorization: Basic base64(user:password)` on every request (RFC 7617).

    Text is encoded as UTF-8, the charset RFC 7617 section 2.1 lets a server announce and the
    one browsers and most servers use; pass bytes to send another encoding. The user name may
    not contain a colon.

    >>> BasicAuth("Aladdin", "open sesame").header_value
    'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='
    >>> BasicAuth("Aladdin", "open sesame")
    BasicAuth(username='Aladdin', password=<hidden>)
    """

    def __init__(self, username: str | bytes, password: str | bytes) -> None:
        user = _credential(username, "user name")
        if b":" in user:
            raise InvalidRequest("a Basic auth user name cannot contain ':' (RFC 7617)")
        secret = _credential(password, "password")
        self.username = username
        self.header_value = "Basic " + base64.b64encode(user + b":" + secret).decode("ascii")

    def auth_flow(self, request: Request) -> AuthFlow:
        request.headers["Authorization"] = self.header_value
        yield request

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=<hidden>)"


# -- Digest challenges ------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_OWS = r"[ \t]*"
_SCHEME_RE = re.compile(_TOKEN)
_PARAM_RE = re.compile(rf"({_TOKEN}){_OWS}={_OWS}({_TOKEN}|{_QUOTED})")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
_SEPARATORS_RE = re.compile(r"[ \t,]*")
_SPACE_RE = re.compile(_OWS)


class _Malformed(ValueError):
    pass


def _skip(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """The end of `pattern` (one that may match nothing) matched at `pos`."""
    match = pattern.match(text, pos)
    return pos if match is None else match.end()


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_params(text: str, pos: int) -> tuple[dict[str, str], int]:
    """The auth-params (or token68) of one challenge, starting at `pos`."""
    params: dict[str, str] = {}
    while True:
        match = _PARAM_RE.match(text, pos)
        if match is None:
            if not params and (token68 := _TOKEN68_RE.match(text, pos)):
                return {"": token68.group()}, token68.end()
            return params, pos
        name = match.group(1).lower()
        if name in params:
            raise _Malformed(f"parameter {name!r} appears twice")
        params[name] = _unquote(match.group(2))
        pos = _skip(_SPACE_RE, text, match.end())
        if pos < len(text) and text[pos] != ",":
            raise _Malformed(f"unexpected text at {text[pos:pos + 20]!r}")
        pos = _skip(_SEPARATORS_RE, text, pos)


def parse_challenges(text: str) -> list[tuple[str, dict[str, str]]]:
    """The challenges of one WWW-Authenticate value (RFC 9110 section 11.6.1), as (scheme in
    lower case, parameters with lower-case names); raises ValueError if it is malformed.

    >>> parse_challenges('Basic realm="a", Digest realm="b", nonce="n, 1"')
    [('basic', {'realm': 'a'}), ('digest', {'realm': 'b', 'nonce': 'n, 1'})]
    """
    challenges = []
    pos = _skip(_SEPARATORS_RE, text, 0)
    while pos < len(text):
        scheme = _SCHEME_RE.match(text, pos)
        if scheme is None:
            raise _Malformed(f"expected an auth scheme at {text[pos:pos + 20]!r}")
        pos = _skip(_SPACE_RE, text, scheme.end())
        params, pos = _parse_params(text, pos)
        challenges.append((scheme.group().lower(), params))
        pos = _skip(_SEPARATORS_RE, text, pos)
    return challenges


def _hasher(name: str) -> Callable[[bytes], str]:
    return lambda data: hashlib.new(name, data).hexdigest()


_ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": _hasher("md5"),
    "SHA-256": _hasher("sha256"),
}
if "sha512_256" in hashlib.algorithms_available:  # depends on the OpenSSL build
    _ALGORITHMS["SHA-512-256"] = _hasher("sha512_256")


@dataclass(frozen=True)
class DigestChallenge:
    """One usable Digest challenge. `qop` is "auth", or None for an RFC 2069 server that
    offered no qop; `algorithm` is upper case, "-SESS" variants spelled "-sess"."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str | None = "auth"
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def from_params(cls, params: dict[str, str]) -> DigestChallenge:
        """Validate the parameters of a Digest challenge; ValueError says what is wrong."""
        if "realm" not in params or not params.get("nonce"):
            raise _Malformed("a Digest challenge needs a realm and a nonce")
        algorithm = params.get("algorithm", "MD5").upper()
        base = algorithm.removesuffix("-SESS")
        if base not in _ALGORITHMS:
            raise _Malformed(f"unsupported Digest algorithm {params['algorithm']!r}")
        qop: str | None = None
        if "qop" in params:
            offered = {item.strip().lower() for item in params["qop"].split(",")}
            if "auth" not in offered:
                raise _Malformed(f"unsupported qop {params['qop']!r} (only 'auth' is sent)")
            qop = "auth"
        return cls(realm=params["realm"], nonce=params["nonce"],
                   algorithm=base + ("-sess" if algorithm.endswith("-SESS") else ""),
                   qop=qop, opaque=params.get("opaque"),
                   stale=params.get("stale", "").lower() == "true")


def parse_digest_challenges(values: list[str]) -> list[DigestChallenge | ValueError]:
    """Each Digest challenge found in WWW-Authenticate `values`: usable ones, and the
    ValueError of those that are not, in the server's order. A value that cannot be parsed
    yields its error only if it mentions Digest (another scheme's syntax is not ours)."""
    found: list[DigestChallenge | ValueError] = []
    for value in values:
        try:
            challenges = parse_challenges(value)
        except _Malformed as exc:
            if re.search(r"(?i)\bdigest\b", value):
                found.append(_Malformed(f"malformed WWW-Authenticate {value!r}: {exc}"))
            continue
        for scheme, params in challenges:
            if scheme != "digest":
                continue
            try:
                found.append(DigestChallenge.from_params(params))
            except _Malformed as exc:
                found.append(exc)
    return found


# -- Digest responses -------------------------------------------------------------------------


def digest_response(challenge: DigestChallenge, username: bytes, password: bytes,
                    method: str, uri: str, nc: int, cnonce: str) -> str:
    """The `response` parameter of RFC 7616 section 3.4.1 for qop=auth (or none)."""
    digest = _ALGORITHMS[challenge.algorithm.removesuffix("-sess")]
    ha1 = digest(b"%s:%s:%s" % (username, challenge.realm.encode("utf-8"), password))
    if challenge.algorithm.endswith("-sess"):
        ha1 = digest(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    ha2 = digest(f"{method}:{uri}".encode())
    if challenge.qop is None:
        return digest(f"{ha1}:{challenge.nonce}:{ha2}".encode())
    return digest(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{challenge.qop}:{ha2}".encode())


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _username_param(username: str) -> str:
    """username="..." for ASCII names, username*=UTF-8''... (RFC 8187) otherwise."""
    if username.isascii():
        return f"username={_quoted(username)}"
    return f"username*=UTF-8''{quote(username, safe='')}"


@dataclass
class _Nonce:
    """The challenge remembered for an origin, and how many times its nonce was used."""

    challenge: DigestChallenge
    count: int = 0


class DigestAuth(Auth):
    """HTTP Digest access authentication (RFC 7616): MD5, SHA-256 (and SHA-512-256 where
    OpenSSL has it), each also as -sess; qop "auth" (or none, for RFC 2069 servers).

    The last challenge of each origin is remembered: later requests there answer it at once,
    with the nonce count incremented, instead of waiting for a 401. A 401 whose challenge says
    `stale=true` (the nonce expired) is answered once more with the new nonce; any other 401
    to an answer is returned. Safe to share between threads.

    `cnonce` makes the client nonces (for tests); by default 128 random bits, in hex.
    """

    def __init__(self, username: str, password: str | bytes, *,
                 cnonce: Callable[[], str] | None = None) -> None:
        if not isinstance(username, str):
            raise InvalidRequest(f"the user name must be a str, not {type(username).__name__}")
        self.username = username
        self._user = _credential(username, "user name")
        self._password = _credential(password, "password")
        self._cnonce = cnonce or (lambda: secrets.token_hex(16))
        self._nonces: dict[str, _Nonce] = {}  # origin key -> the challenge answered last
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DigestAuth(username={self.username!r}, password=<hidden>)"

    def auth_flow(self, request: Request) -> AuthFlow:
        origin = request.url.origin.key
        with self._lock:
            known = self._nonces.get(origin)
        if known is not None:
            self._authorize(request, known)
        response = yield request
        answered = stale_retried = False
        while response.status_code == 401:
            challenge = self._challenge(response)
            if challenge is None:
                return
            if answered:
                # A 401 to our own answer: wrong credentials, unless the nonce went stale.
                if not challenge.stale or stale_retried:
                    return
                stale_retried = True
            answered = True
            self._authorize(request, self._remember(origin, challenge))
            response = yield request

    def _challenge(self, response: Response) -> DigestChallenge | None:
        """The first usable Digest challenge of a 401; None if it has none at all."""
        found = parse_digest_challenges(response.headers.get_list("www-authenticate"))
        if not found:
            return None
        for item in found:
            if isinstance(item, DigestChallenge):
                return item
        reasons = "; ".join(str(item) for item in found)
        raise AuthError(f"cannot answer the Digest challenge of {response.request.url}: "
                        f"{reasons}", response=response)

    def _remember(self, origin: str, challenge: DigestChallenge) -> _Nonce:
        with self._lock:
            known = self._nonces.get(origin)
            if known is not None and known.challenge.nonce == challenge.nonce:
                known.challenge = challenge  # same nonce: its count goes on
            else:
                known = self._nonces[origin] = _Nonce(challenge)
            return known

    def _authorize(self, request: Request, known: _Nonce) -> None:
        with self._lock:
            known.count += 1
            challenge, nc = known.challenge, known.count
        request.headers["Authorization"] = self.authorization(
            challenge, request.method, request.url.raw_path, nc, self._cnonce())

    def authorization(self, challenge: DigestChallenge, method: str, uri: str, nc: int,
                      cnonce: str) -> str:
        """The Authorization header value answering `challenge` (public for tests)."""
        response = digest_response(challenge, self._user, self._password, method, uri, nc,
                                   cnonce)
        parts = [_username_param(self.username), f"realm={_quoted(challenge.realm)}",
                 f"uri={_quoted(uri)}", f"algorithm={challenge.algorithm}",
                 f"nonce={_quoted(challenge.nonce)}"]
        if challenge.qop is not None:
            parts += [f"nc={nc:08x}", f"cnonce={_quoted(cnonce)}", f"qop={challenge.qop}"]
        parts.append(f"response={_quoted(response)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quoted(challenge.opaque)}")
        return "Digest " + ", ".join(parts)

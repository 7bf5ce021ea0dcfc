"""TLS contexts (built lazily, shared per settings) and TLS session resumption.

Loading the CA bundle costs milliseconds and memory, so every client with the same `verify=`
and `cert=` shares one context, built the first time any of them opens an https connection.
A plain-http client never builds one.

Session resumption: each pool keeps the last TLS session of every pool key (`SessionStore`)
and offers it when it opens the next connection of that key, so the server can skip the full
handshake (certificate chain, its verification, a key exchange per TLS 1.2). The blocking
client passes the session to `wrap_socket(session=...)`. asyncio's `create_connection` takes no
session, but its TLS layer (and uvloop's) makes its `ssl.SSLObject` through the context's
`sslobject_class`, in the connecting task's context: `offer_session()` sets the session in a
context variable that our `SSLObject` subclass picks up. No MemoryBIO protocol of our own is
needed, and the TLS reads and writes stay in asyncio's (or uvloop's) optimised code.
"""

from __future__ import annotations

import contextvars
import os
import ssl
import threading
import time
from collections.abc import Hashable

__all__ = ["CertTypes", "SessionStore", "VerifyTypes", "check_cert", "check_verify",
           "offer_session", "tls_context", "tls_identity"]

VerifyTypes = bool | str | ssl.SSLContext
#: A client certificate: a PEM file holding the certificate and its key, or
#: (certfile, keyfile) or (certfile, keyfile, password).
CertTypes = str | tuple[str, str] | tuple[str, str, str]

_lock = threading.Lock()
_shared: dict[tuple[bool | str, tuple[str, ...], CertTypes | None], ssl.SSLContext] = {}

HTTP1: tuple[str, ...] = ("http/1.1",)

# The session the connecting asyncio task offers (see the module docstring); each task runs in
# its own copy of the context, so connects in flight never see each other's.
_offered: contextvars.ContextVar[ssl.SSLSession | None] = contextvars.ContextVar(
    "poolhttp_tls_session", default=None)


class _ResumingSSLObject(ssl.SSLObject):
    """An SSLObject that starts from the session the connecting task offers, if any."""

    @classmethod
    def _create(cls, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                server_side: bool = False, server_hostname: str | None = None,
                session: ssl.SSLSession | None = None, context: ssl.SSLContext | None = None
                ) -> ssl.SSLObject:
        if session is None and not server_side:
            session = _offered.get()
        created: ssl.SSLObject = super()._create(  # type: ignore[misc]
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
            session=session, context=context)
        return created


def offer_session(session: ssl.SSLSession | None) -> None:
    """Offer `session` to the TLS handshakes the calling asyncio task starts from now on."""
    _offered.set(session)


def _build(verify: bool | str, alpn: tuple[str, ...], cert: CertTypes | None) -> ssl.SSLContext:
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        context = ssl.create_default_context()
    elif os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(alpn))
    if cert is not None:
        _load_cert(context, cert)
    context.sslobject_class = _ResumingSSLObject
    return context


def tls_context(verify: VerifyTypes, alpn: tuple[str, ...] = HTTP1,
                cert: CertTypes | None = None) -> ssl.SSLContext:
    """The context for `verify`: True (system CAs), False (no checks), a CA bundle path, or
    a ready `ssl.SSLContext` used as it is; `cert`: a client certificate to present. `alpn`:
    the protocols offered, in order of preference ("h2", "http/1.1"); on a context of the
    caller's they are set on it only when HTTP/2 is offered (as it must be for ALPN to select
    it), and so is the session hook of asyncio's resumption (harmless for other uses)."""
    if isinstance(verify, ssl.SSLContext):
        if alpn != HTTP1:
            verify.set_alpn_protocols(list(alpn))
        if verify.sslobject_class is ssl.SSLObject:
            verify.sslobject_class = _ResumingSSLObject
        return verify
    key = (verify, alpn, cert)
    context = _shared.get(key)
    if context is None:
        with _lock:
            context = _shared.get(key)
            if context is None:
                context = _shared[key] = _build(verify, alpn, cert)
    return context


def tls_identity(verify: VerifyTypes, cert: CertTypes | None) -> Hashable:
    """A hashable stand-in for TLS settings, for the pool key (a context is compared by
    identity; a certificate by its paths, never its password)."""
    settings: Hashable = verify if isinstance(verify, (bool, str)) else id(verify)
    if cert is None:
        return settings
    return (settings, cert if isinstance(cert, str) else tuple(cert[:2]))


class SessionStore:
    """The last TLS session of each pool key, offered to its next new connection.

    Reading a connection's session is costly in CPython (it copies the session by encoding
    and decoding it, which decodes the server's certificate again: about as much as
    resumption saves), so a session is taken only from a connection whose handshake was a
    full one, or when the one kept is past half its lifetime; a resumed connection leaves the
    kept session in place, and it is offered again (TLS 1.3 tickets are reusable by servers
    that allow it, as nginx does; one that does not makes the next handshake full, whose
    session is then kept).

    Bounded: past `limit` keys it starts over (a session is an optimisation, never needed).
    The threaded client calls it from many threads: a dict's get and set are atomic."""

    __slots__ = ("_sessions", "limit")

    def __init__(self, limit: int = 4096) -> None:
        self._sessions: dict[str, tuple[ssl.SSLSession, float]] = {}
        self.limit = limit

    def get(self, key: str) -> ssl.SSLSession | None:
        kept = self._sessions.get(key)
        return None if kept is None else kept[0]

    def wants(self, key: str, resumed: bool) -> bool:
        """Whether to take the session of a connection of `key` that has carried a response
        (`resumed`: its handshake resumed the kept one)."""
        kept = self._sessions.get(key)
        if kept is None or not resumed:
            return True
        session, since = kept
        lifetime = session.ticket_lifetime_hint or session.timeout
        return time.monotonic() - since > lifetime / 2

    def keep(self, key: str, session: ssl.SSLSession | None) -> None:
        """Keep `session` (of a connection of `key` that has carried a response: a TLS 1.3
        server sends its tickets after the handshake) for the next connection."""
        if session is None:
            return
        sessions = self._sessions
        if len(sessions) >= self.limit and key not in sessions:
            sessions.clear()
        sessions[key] = (session, time.monotonic())

    def forget(self, key: str) -> None:
        """Drop the session of `key` (the handshake that offered it failed)."""
        self._sessions.pop(key, None)


def check_verify(verify: object) -> VerifyTypes:
    """Validate the `verify=` argument at client construction (clear errors, no I/O)."""
    if isinstance(verify, (bool, ssl.SSLContext)):
        return verify
    if isinstance(verify, str):
        if not os.path.exists(verify):
            raise FileNotFoundError(f"verify={verify!r}: no such CA bundle file or directory")
        return verify
    raise TypeError(f"verify must be a bool, a CA bundle path or an ssl.SSLContext, "
                    f"not {type(verify).__name__}")


def check_cert(cert: object, verify: VerifyTypes) -> CertTypes | None:
    """Validate `cert=` at client construction: the files exist and the key opens (with the
    password, if given). The password never appears in an error message."""
    if cert is None:
        return None
    if isinstance(cert, str):
        parts: tuple[str, ...] = (cert,)
    elif isinstance(cert, tuple) and len(cert) in (2, 3) and all(isinstance(p, str)
                                                                 for p in cert):
        parts = cert
    else:
        raise TypeError("cert must be a path (certificate and key in one PEM file) or a "
                        "tuple (certfile, keyfile) or (certfile, keyfile, password) of str")
    if isinstance(verify, ssl.SSLContext):
        raise ValueError("cert= cannot be added to the ssl.SSLContext given as verify=; load "
                         "the certificate on it: context.load_cert_chain(certfile, keyfile)")
    for path in parts[:2]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cert: no such certificate or key file: {path!r}")
    checked: CertTypes = cert
    _load_cert(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), checked)
    return checked


def _load_cert(context: ssl.SSLContext, cert: CertTypes) -> None:
    if isinstance(cert, str):
        certfile, keyfile, password = cert, None, None
    else:
        certfile, keyfile = cert[0], cert[1]
        password = cert[2] if len(cert) == 3 else None
    try:
        # Without a password, OpenSSL would ask for one on the terminal: answer it ourselves.
        context.load_cert_chain(certfile, keyfile, password if password is not None
                                else _no_password)
    except _NoPassword:
        raise ValueError(f"cert: the key of {certfile!r} is encrypted and needs its "
                         "password: cert=(certfile, keyfile, password)") from None
    except ssl.SSLError as exc:
        hint = " (wrong password?)" if password is not None else (
            " (an encrypted key needs its password: cert=(certfile, keyfile, password))")
        raise ValueError(f"cert: cannot load the client certificate {certfile!r}"
                         f"{'' if keyfile is None else f' with key {keyfile!r}'}: "
                         f"{exc.reason or exc}{hint}") from None


class _NoPassword(Exception):
    pass


def _no_password() -> str:
    raise _NoPassword

"""TLS contexts: built lazily, once per process for the default settings.

Loading the CA bundle costs milliseconds and memory, so every client with `verify=True` shares
one context, built the first time any of them opens an https connection. A plain-http client
never builds one.
"""

from __future__ import annotations

import os
import ssl
import threading

__all__ = ["VerifyTypes", "tls_context"]

VerifyTypes = bool | str | ssl.SSLContext

_lock = threading.Lock()
_shared: dict[tuple[bool | str, tuple[str, ...]], ssl.SSLContext] = {}

HTTP1: tuple[str, ...] = ("http/1.1",)


def _build(verify: bool | str, alpn: tuple[str, ...]) -> ssl.SSLContext:
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
    return context


def tls_context(verify: VerifyTypes, alpn: tuple[str, ...] = HTTP1) -> ssl.SSLContext:
    """The context for `verify`: True (system CAs), False (no checks), a CA bundle path, or
    a ready `ssl.SSLContext` used as it is. `alpn`: the protocols offered, in order of
    preference ("h2", "http/1.1"); on a context of the caller's they are set on it only when
    HTTP/2 is offered (as it must be for ALPN to select it)."""
    if isinstance(verify, ssl.SSLContext):
        if alpn != HTTP1:
            verify.set_alpn_protocols(list(alpn))
        return verify
    key = (verify, alpn)
    context = _shared.get(key)
    if context is None:
        with _lock:
            context = _shared.get(key)
            if context is None:
                context = _shared[key] = _build(verify, alpn)
    return context


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

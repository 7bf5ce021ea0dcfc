"""Tunnels through a proxy, without I/O: HTTP CONNECT, SOCKS5 and SOCKS4 handshakes.

Theory of operation. A connection through a proxy opens TCP to the proxy (and TLS to it, for
an https:// proxy), runs one handshake over that stream, and then carries on as if it were
connected to the origin: TLS to the origin, if any, starts after the handshake, inside the
tunnel. Both drivers run the handshake the same way, bounded by the connect time-out:

    handshake = make_handshake(proxy, origin.host, origin.port, origin=origin.key,
                               target_address=ip)   # ip: socks5:// and socks4:// only
    send(handshake.start())
    while not handshake.done:
        data = receive()
        if not data:
            handshake.eof()                # raises ProxyError
        reply = handshake.feed(data)       # raises ProxyError on a refusal or a bad reply
        if reply:
            send(reply)
    handshake.leftover                     # bytes past the handshake: the connection's first

Rules every handshake keeps:
- `feed` takes bytes in any pieces, one at a time included, and answers only once a whole
  message of the proxy is in; bytes past the handshake's end are kept in `leftover`.
- A refusal, a malformed reply and an early close raise ProxyError (a ConnectError: nothing
  reached the origin), whose message names the proxy without credentials and the target.
- The proxy's reply is bounded: an HTTP reply head over 64 KiB is refused; SOCKS replies have
  a size their first bytes fix.
- `feed` or `start` out of turn is a bug in the driver: RuntimeError.

SOCKS5 goes through socksio, the sans-I/O SOCKS library (the `socks` extra), imported when the
first SOCKS5 handshake is made. Its parsers want each reply whole, so the framing (how many
bytes a reply has) is done here. SOCKS4 and SOCKS4a are built here and need no extra: the
request is nine bytes and two strings, and socksio 1.0 cannot send the empty user id that
clients send when the proxy URL names no user.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .._exceptions import InvalidURL, ProxyError
from .._proxy import Proxy, basic_auth_header

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["MAX_REPLY_HEAD", "SOCKS4_REPLIES", "SOCKS5_REPLIES", "ConnectHandshake",
           "Handshake", "Socks4Handshake", "Socks5Handshake", "make_handshake",
           "proxy_unreachable"]

MAX_REPLY_HEAD = 64 * 1024  # an HTTP proxy's reply head (status line and headers), at most

# RFC 1928 section 6.
SOCKS5_REPLIES = {
    0x00: "succeeded", 0x01: "general failure", 0x02: "connection not allowed by ruleset",
    0x03: "network unreachable", 0x04: "host unreachable", 0x05: "connection refused",
    0x06: "TTL expired", 0x07: "command not supported", 0x08: "address type not supported",
}
# The SOCKS4 protocol's own document (Ying-Da Lee), section "CONNECT".
SOCKS4_REPLIES = {
    90: "request granted", 91: "request rejected or failed",
    92: "request rejected: the proxy cannot reach identd on the client",
    93: "request rejected: identd reports a different user id",
}


class Handshake(Protocol):
    """One proxy handshake, driven by the connection's driver (see the module's docstring)."""

    done: bool  # the tunnel is open
    leftover: bytes  # bytes received after the handshake's end: the connection's first bytes

    def start(self) -> bytes:
        """The first bytes to send to the proxy."""

    def feed(self, data: bytes) -> bytes:
        """`data` received from the proxy; returns the bytes to send next (b"" for none)."""

    def eof(self) -> NoReturn:
        """The proxy closed the connection before `done`: raises ProxyError."""


def make_handshake(proxy: Proxy, target_host: str, target_port: int, *, origin: str,
                   target_address: str | None = None,
                   user_agent: bytes | None = None) -> Handshake:
    """The handshake that opens a tunnel through `proxy` to target_host:target_port.

    `origin` is the origin key errors carry. `target_address` is the IP address the driver
    resolved `target_host` to: socks5:// and socks4:// send it (ValueError without one, unless
    the host is an IP literal); the other schemes send the name and ignore it. `user_agent`
    goes on an HTTP CONNECT request. SOCKS4 cannot carry IPv6: ProxyError.

    >>> handshake = make_handshake(Proxy("http://127.0.0.1:3128"), "example.com", 443,
    ...                            origin="https://example.com:443")
    >>> handshake.start()
    b'CONNECT example.com:443 HTTP/1.1\\r\\nHost: example.com:443\\r\\n\\r\\n'
    >>> handshake.feed(b"HTTP/1.1 200 Connection established\\r\\n\\r\\n"), handshake.done
    (b'', True)
    """
    host = target_host.strip("[]")
    if not proxy.is_socks:
        return ConnectHandshake(proxy, host, target_port, origin=origin, user_agent=user_agent)
    address = _socks_address(proxy, host, target_address)
    if proxy.scheme.startswith("socks5"):
        return Socks5Handshake(proxy, address, target_port, origin=origin, shown_host=host)
    return Socks4Handshake(proxy, address, target_port, origin=origin, shown_host=host)


def _socks_address(proxy: Proxy, host: str, target_address: str | None) -> str:
    """What a SOCKS request names: the host for socks5h/socks4a or an IP literal host, else
    the address the driver resolved it to."""
    if proxy.remote_dns or _ip(host) is not None:
        return host
    if target_address is None:
        remote = {"socks5": "socks5h", "socks4": "socks4a"}[proxy.scheme]
        raise ValueError(f"a {proxy.scheme}:// proxy is sent an address, not a name: resolve "
                         f"{host!r} and pass target_address (or use {remote}:// to have the "
                         "proxy resolve it)")
    if _ip(target_address) is None:
        raise ValueError(f"target_address must be an IP address, not {target_address!r}")
    return target_address


def proxy_unreachable(proxy: Proxy, *, origin: str, reason: str) -> ProxyError:
    """The error of a failed TCP (or TLS) connect to the proxy itself, in one wording for both
    drivers: `reason` says why ("Connection refused", "timed out").

    >>> print(proxy_unreachable(Proxy("http://u:pw@127.0.0.1:3128"),
    ...                         origin="https://example.com:443", reason="Connection refused"))
    cannot connect to proxy http://127.0.0.1:3128 (for https://example.com:443): Connection refused
    """
    return ProxyError(f"cannot connect to proxy {proxy.url} (for {origin}): {reason}",
                      origin=origin, proxy=proxy.url)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Tunnel:
    """What every handshake shares: its state, its buffer and the wording of its errors."""

    kind = ""  # "CONNECT", "SOCKS5", "SOCKS4": how messages name the exchange

    def __init__(self, proxy: Proxy, target: str, origin: str) -> None:
        self.proxy = proxy
        self.target = target  # host:port, as messages show it
        self.origin = origin
        self.done = False
        self.leftover = b""
        self._started = False
        self._received = 0
        self._buffer = bytearray()

    def _begin(self) -> None:
        if self._started:
            raise RuntimeError(f"the {self.kind} handshake was already started")
        self._started = True

    def _take(self, data: bytes) -> None:
        if not self._started or self.done:
            raise RuntimeError(f"feed() {'after the end of' if self.done else 'before'} the "
                               f"{self.kind} handshake")
        self._received += len(data)
        self._buffer += data

    def _finish(self, used: int) -> None:
        """The handshake ends after the first `used` bytes of the buffer."""
        self.done = True
        self.leftover = bytes(self._buffer[used:])
        self._buffer.clear()

    def _error(self, problem: str, *, status: int | None = None,
               reply: str | None = None) -> ProxyError:
        return ProxyError(f"proxy {self.proxy.url} {problem}", origin=self.origin,
                          proxy=self.proxy.url, status=status, reply=reply)

    def _malformed(self, what: str) -> ProxyError:
        return self._error(f"sent a malformed {self.kind} reply for {self.target}: {what}")

    def eof(self) -> NoReturn:
        if self.done:
            raise RuntimeError(f"eof() after the end of the {self.kind} handshake")
        raise self._error(f"closed the connection {self._cut_short()}")

    def _cut_short(self) -> str:
        """What `eof` says the proxy closed the connection in."""
        return f"during the {self.kind} handshake for {self.target}"


# -- HTTP CONNECT -------------------------------------------------------------------------------

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?\r?")
_UNSAFE_HEADER = re.compile(rb"[\x00\r\n]")


class ConnectHandshake(_Tunnel):
    """`CONNECT host:port HTTP/1.1` to an HTTP(S) proxy (RFC 9110 section 9.3.6).

    Any 2xx opens the tunnel; its headers are skipped (a 2xx to CONNECT has no body). 1xx
    replies are interim and skipped. Anything else is refused, and the connection is dropped
    without reading the body.

    >>> handshake = ConnectHandshake(Proxy("http://proxy:3128"), "::1", 8443, origin="x")
    >>> handshake.start().split(b"\\r\\n")[:2]
    [b'CONNECT [::1]:8443 HTTP/1.1', b'Host: [::1]:8443']
    """

    kind = "CONNECT"

    def __init__(self, proxy: Proxy, host: str, port: int, *, origin: str,
                 user_agent: bytes | None = None) -> None:
        super().__init__(proxy, _authority(host, port), origin)
        if user_agent is not None and _UNSAFE_HEADER.search(user_agent):
            raise ValueError("user_agent holds CR, LF or NUL")
        self._auth = basic_auth_header(proxy)
        authority = self.target.encode("ascii")
        lines = [b"CONNECT " + authority + b" HTTP/1.1", b"Host: " + authority]
        if self._auth is not None:
            lines.append(b"Proxy-Authorization: " + self._auth)
        if user_agent is not None:
            lines.append(b"User-Agent: " + user_agent)
        self._request = b"\r\n".join(lines) + b"\r\n\r\n"
        self._scanned = 0  # the buffer up to here holds no head end: searched already

    def start(self) -> bytes:
        self._begin()
        return self._request

    def feed(self, data: bytes) -> bytes:
        self._take(data)
        while not self.done:
            end = _HEAD_END.search(self._buffer, self._scanned)
            if end is None:
                if len(self._buffer) > MAX_REPLY_HEAD:
                    raise self._oversize()
                # A head end may straddle pieces: search its last bytes again next time.
                self._scanned = max(0, len(self._buffer) - 3)
                return b""
            if end.start() > MAX_REPLY_HEAD:
                raise self._oversize()
            status, reason = self._status(bytes(self._buffer[:end.start()]))
            if 200 <= status < 300:
                self._finish(end.end())
            elif 100 <= status < 200:
                del self._buffer[:end.end()]
                self._scanned = 0
            else:
                raise self._refused(status, reason)
        return b""

    def _status(self, head: bytes) -> tuple[int, str]:
        first_line = head.split(b"\n", 1)[0]
        match = _STATUS_LINE.fullmatch(first_line)
        if match is None:
            raise self._malformed(f"status line {_printable(first_line)!r}")
        return int(match.group(1)), _printable(match.group(2) or b"")

    def _cut_short(self) -> str:
        when = "in the middle of its reply" if self._received else "before replying"
        return f"{when} to CONNECT to {self.target}"

    def _oversize(self) -> ProxyError:
        return self._error(f"sent a reply head over {MAX_REPLY_HEAD // 1024} KiB to CONNECT "
                           f"to {self.target}")

    def _refused(self, status: int, reason: str) -> ProxyError:
        problem = f"refused CONNECT to {self.target}: {status} {reason}".rstrip()
        if status == 407:
            problem += (f" (credentials for user {self.proxy.username!r} were sent)"
                        if self._auth else " (no credentials were sent: give them in the "
                        "proxy URL, http://user:password@host:port)")
        return self._error(problem, status=status)


def _printable(raw: bytes) -> str:
    """A proxy's text as a message may quote it: printable ASCII, at most 100 characters."""
    text = "".join(char if " " <= char <= "~" else "?" for char in raw.decode("latin-1"))
    return text if len(text) <= 100 else text[:100] + "..."


# -- SOCKS5 -------------------------------------------------------------------------------------

_METHODS, _AUTH, _COMMAND = "methods", "auth", "command"  # the reply each step waits for


def _socksio() -> ModuleType:
    try:
        import socksio
    except ImportError as exc:
        raise ImportError("SOCKS5 proxies need the socksio package: "
                          "pip install 'poolhttp[socks]'") from exc
    return socksio


class Socks5Handshake(_Tunnel):
    """SOCKS5 (RFC 1928), with user name and password authentication (RFC 1929) when the
    proxy URL has credentials, then CONNECT to `address` (a name for socks5h, an IP address
    for socks5, as `make_handshake` chose).

    Offered methods: "no authentication", and also "username/password" when there are
    credentials (the proxy picks). A failure reply is reported from its first two bytes, so a
    proxy that closes before the rest of the reply still says why.
    """

    kind = "SOCKS5"

    def __init__(self, proxy: Proxy, address: str, port: int, *, origin: str,
                 shown_host: str | None = None) -> None:
        super().__init__(proxy, _authority(shown_host or address, port), origin)
        if _ip(address) is None and len(address.encode("ascii", "replace")) > 255:
            raise InvalidURL(f"host name {address[:40]!r}... is over 255 bytes: a SOCKS5 proxy "
                             "cannot be sent it")
        self._io: Any = _socksio()
        self._connection = self._io.SOCKS5Connection()
        self._address = address.split("%", 1)[0]  # no IPv6 zone: it means nothing to the proxy
        self._port = port
        self._step = _METHODS
        methods = self._io.SOCKS5AuthMethod
        self._offered = [methods.NO_AUTH_REQUIRED]
        if proxy.username is not None:
            self._offered.append(methods.USERNAME_PASSWORD)

    def start(self) -> bytes:
        self._begin()
        self._connection.send(self._io.SOCKS5AuthMethodsRequest(self._offered))
        return bytes(self._connection.data_to_send())

    def feed(self, data: bytes) -> bytes:
        self._take(data)
        while not self.done:
            size = self._reply_size()
            if size is None or len(self._buffer) < size:
                break
            message = bytes(self._buffer[:size])
            if self._step == _COMMAND:
                self._on_command_reply(message)
                self._finish(size)
            else:
                del self._buffer[:size]
                self._on_method_or_auth_reply(message)
        return bytes(self._connection.data_to_send())

    def _reply_size(self) -> int | None:
        """The size of the reply now awaited, once its first bytes tell; None until then.
        Raises at once on a command reply that reports a failure."""
        if self._step != _COMMAND:
            return 2  # the method choice (VER METHOD) and the auth status (VER STATUS)
        head = self._buffer
        if len(head) >= 2:
            if head[0] != 5:
                raise self._malformed(f"version {head[0]}, not 5")
            if head[1] != 0:
                raise self._failure(head[1])
        if len(head) < 5:
            return None
        # VER REP RSV ATYP, the bound address (IPv4, a name with its length byte, IPv6), port.
        sizes = {1: 10, 3: 7 + head[4], 4: 22}
        if head[3] not in sizes:
            raise self._malformed(f"unknown address type {head[3]}")
        return sizes[head[3]]

    def _on_method_or_auth_reply(self, message: bytes) -> None:
        if self._step == _METHODS:
            self._on_method(message)
        else:
            self._on_auth(message)

    def _on_method(self, message: bytes) -> None:
        if message[0] != 5:
            raise self._malformed(f"version {message[0]}, not 5")
        if message[1] == 0xFF:
            offered = " and ".join(_METHOD_NAMES[method[0]] for method in self._offered)
            raise self._error(f"accepts none of the authentication methods offered "
                              f"({offered}) for {self.target}",
                              reply="no acceptable authentication methods")
        choice = self._receive(message)
        if choice.method not in self._offered:
            raise self._malformed(f"chose authentication method {message[1]}, not offered")
        if choice.method == self._io.SOCKS5AuthMethod.USERNAME_PASSWORD:
            self._step = _AUTH
            assert self.proxy.username is not None  # offered only with credentials
            self._connection.send(self._io.SOCKS5UsernamePasswordRequest(
                self.proxy.username.encode("utf-8"), (self.proxy.password or "").encode("utf-8")))
        else:
            self._send_command()

    def _on_auth(self, message: bytes) -> None:
        if message[0] != 1:  # RFC 1929's own version number
            raise self._malformed(f"authentication reply version {message[0]}, not 1")
        if not self._receive(message).success:
            raise self._error(f"rejected the user name and password for {self.target} "
                              f"(status {message[1]})", reply="authentication failed")
        self._send_command()

    def _send_command(self) -> None:
        self._step = _COMMAND
        self._connection.send(self._io.SOCKS5CommandRequest.from_address(
            self._io.SOCKS5Command.CONNECT, (self._address, self._port)))

    def _on_command_reply(self, message: bytes) -> None:
        reply = self._receive(message)
        if reply.reply_code != self._io.SOCKS5ReplyCode.SUCCEEDED:  # _reply_size saw it first
            raise self._failure(message[1])

    def _failure(self, code: int) -> ProxyError:
        name = SOCKS5_REPLIES.get(code, f"unknown reply {code:#04x}")
        return self._error(f"failed to connect to {self.target}: {name} (SOCKS5 reply "
                           f"{code:#04x})", reply=name)

    def _receive(self, message: bytes) -> Any:
        """socksio's reading of one whole reply; its ProtocolError becomes a ProxyError."""
        try:
            return self._connection.receive_data(message)
        except self._io.ProtocolError as exc:
            raise self._malformed(str(exc)) from exc


_METHOD_NAMES = {0x00: "no authentication", 0x02: "username/password"}


# -- SOCKS4 and SOCKS4a -----------------------------------------------------------------------


class Socks4Handshake(_Tunnel):
    """SOCKS4 CONNECT to an IPv4 address or, for SOCKS4a, to a name the proxy resolves.

    The user id is the proxy URL's user name, empty without one (SOCKS4 has no password). A
    SOCKS4a request for a name carries the invalid address 0.0.0.1 and the name after the
    user id; an IP literal goes as plain SOCKS4. The reply is 8 bytes, whose first is 0.

    >>> handshake = Socks4Handshake(Proxy("socks4://127.0.0.1"), "192.0.2.7", 80, origin="x")
    >>> handshake.start()
    b'\\x04\\x01\\x00P\\xc0\\x00\\x02\\x07\\x00'
    """

    kind = "SOCKS4"

    def __init__(self, proxy: Proxy, address: str, port: int, *, origin: str,
                 shown_host: str | None = None) -> None:
        super().__init__(proxy, _authority(shown_host or address, port), origin)
        ip = _ip(address)
        if ip is not None and ip.version != 4:
            raise self._error(f"cannot carry the IPv6 address {address} of {self.target} "
                              "(SOCKS4 has IPv4 only: use socks5://)")
        user_id = (proxy.username or "").encode("utf-8")
        head = b"\x04\x01" + port.to_bytes(2, "big")
        if ip is not None:
            self._request = head + ip.packed + user_id + b"\x00"
        elif proxy.remote_dns:
            self._request = (head + b"\x00\x00\x00\x01" + user_id + b"\x00"
                             + address.encode("ascii") + b"\x00")
        else:  # make_handshake never gets here: socks4:// is sent an address
            raise ValueError(f"socks4:// needs an IPv4 address, not {address!r}")

    def start(self) -> bytes:
        self._begin()
        return self._request

    def feed(self, data: bytes) -> bytes:
        self._take(data)
        if len(self._buffer) < 8:
            return b""
        if self._buffer[0] != 0:
            raise self._malformed(f"version {self._buffer[0]}, not 0")
        code = self._buffer[1]
        if code != 90:
            name = SOCKS4_REPLIES.get(code, f"unknown reply {code}")
            raise self._error(f"failed to connect to {self.target}: {name} (SOCKS4 reply "
                              f"{code})", reply=name)
        self._finish(8)
        return b""

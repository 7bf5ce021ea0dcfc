"""Proxies on loopback ports: real ones as child processes, and a scripted one in-process.

Real proxies (each a private child process with its own configuration in a temporary
directory; nothing on the machine is read or written, and no pid file or log goes anywhere
else):

* `Tinyproxy`: an HTTP proxy (forward requests and CONNECT to any port), optionally with
  Basic authentication. Its log tells what it did: connections accepted, request lines,
  CONNECT targets (`log()`, `connects()`, `requests()`).
* `Microsocks`: a SOCKS5 proxy, optionally with username/password authentication. It logs
  nothing: count connections on the target server instead (nginx's `server_stats()`).
* `Dante` (danted): SOCKS4 and SOCKS5 without authentication; its log names every target it
  connected to (`targets()`). It does not speak SOCKS4a (a host name instead of an address):
  use `ScriptedProxy` for that.
* `Stunnel`: an https:// proxy: stunnel in server mode takes TLS (the test CA's server
  certificate) and hands the plaintext to a `Tinyproxy`, which does the proxying. stunnel's
  log counts the TLS connections (`log()`, `accepted()`), the tinyproxy's log the requests.

All of them bind their outgoing connections to 127.0.0.1 (and Dante only passes loopback
targets), so a proxied request can never leave the machine. They are ready when the process
holds the listening socket (checked in /proc, without connecting, so no probe shows up in a
log or a count), and they are stopped with SIGTERM, then SIGKILL for the whole process group;
the kernel sends SIGTERM to a proxy whose test process died without its teardown.

`ScriptedProxy` is an in-process proxy on a thread per connection (at most
`max_connections`), for exact bytes and faults. It detects the protocol from the first byte
(4: SOCKS4/4a, 5: SOCKS5, anything else: HTTP), records every request byte for byte, and
behaves as its `mode` says (see the class). In "relay" mode it is a working proxy of all three
kinds to loopback targets (CONNECT and SOCKS are tunnelled; a forward HTTP request is answered
by the proxy itself, so use tinyproxy to reach a real server that way). With `tls=` it speaks
all of that inside TLS (an https:// proxy with faults).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import ipaddress
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, get_args
from urllib.parse import quote, urlsplit

from . import poll_until
from .certs import CertBundle

__all__ = [
    "DEFAULT_GARBAGE",
    "Dante",
    "Microsocks",
    "ProxyConnection",
    "ProxyError",
    "ProxyFactory",
    "ProxyHandlerError",
    "ProxyMode",
    "ProxyRequest",
    "ScriptedProxy",
    "Stunnel",
    "StunnelLog",
    "Tinyproxy",
    "TinyproxyLog",
    "find_binary",
]

HOST = "127.0.0.1"

# Debian package of each binary (what dev.py installs).
PACKAGES = {
    "tinyproxy": "tinyproxy",
    "microsocks": "microsocks",
    "danted": "dante-server",
    "stunnel4": "stunnel4",
}


class ProxyError(RuntimeError):
    """A proxy could not be started (its output and log are in the message)."""


class ProxyHandlerError(AssertionError):
    """The scripted proxy itself failed (a bug in it, not a client error): raised at stop."""


def find_binary(name: str) -> str | None:
    """A binary on PATH, or in the sbin directories PATH often lacks for non-root users."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def _free_port() -> int:
    """A port free on 127.0.0.1 right now (the child binds it a moment later; `start`
    retries with another port if something took it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on 127.0.0.1:`port` (from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _process_listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on 127.0.0.1:`port`."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    targets = {f"socket:[{inode}]" for inode in inodes}
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for entry in entries:
        try:
            if os.readlink(f"/proc/{pid}/fd/{entry}") in targets:
                return True
        except OSError:
            continue
    return False


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """SIGTERM the process, SIGKILL its group if it does not exit, reap it, and make sure no
    process of its group (its own session: forked children such as dante's) is left."""
    pgid = process.pid
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The leader is alive, so the group id is still ours.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    # Children still in the group keep the group id from being reused, so signalling the
    # group while `_group_members` finds any cannot hit an unrelated process.
    deadline = time.monotonic() + 2.0
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            break
        time.sleep(0.01)


def _emergency_cleanup(process: subprocess.Popen[bytes], directory: Path) -> None:
    _stop_process(process, timeout=1.0)
    shutil.rmtree(directory, ignore_errors=True)


def _read_since(path: Path, since: int) -> str:
    """The complete lines of a log file from byte offset `since`."""
    try:
        with open(path, "rb") as handle:
            handle.seek(since)
            data = handle.read()
    except FileNotFoundError:
        return ""
    end = data.rfind(b"\n")
    return data[: end + 1].decode(errors="replace") if end >= 0 else ""


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


_SAFE_CREDENTIAL = re.compile(r"[A-Za-z0-9._~-]+")


def _check_credentials(username: str | None, password: str | None) -> None:
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    for value in (username, password):
        if value is not None and not _SAFE_CREDENTIAL.fullmatch(value):
            raise ValueError(f"credential {value!r}: use letters, digits and ._~- only")


# --------------------------------------------------------------------------------------------
# Child-process proxies


class _ProcessProxy:
    """Lifecycle shared by the child-process proxies; a context manager."""

    program: ClassVar[str]
    scheme: ClassVar[str]

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        _check_credentials(username, password)
        self.username = username
        self.password = password
        self.host = HOST
        self.port = 0
        self.start_timeout = start_timeout
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., _ProcessProxy] | None = None

    def __enter__(self) -> _ProcessProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url if self.port else '(not started)'}>"

    # -- what a subclass provides ----------------------------------------------------------

    def _prepare(self, binary: str) -> list[str]:
        """Write the configuration for `self.port`; return the command line."""
        raise NotImplementedError

    def _find_binary(self) -> str | None:
        return find_binary(self.program)

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "proxy.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.directory is not None:
            raise ProxyError("already started")
        binary = self._find_binary()
        if binary is None:
            raise ProxyError(
                f"{self.program} is not installed (Debian package {PACKAGES[self.program]}; "
                "`python3 dev.py test` installs it)"
            )
        self.directory = Path(tempfile.mkdtemp(prefix=f"poolhttp-{self.program}-"))
        try:
            # Another process can take the port between our probe and the proxy's bind: then
            # a new port is the fix; three collisions in a row mean something else.
            for attempt in range(3):
                self.port = _free_port()
                self.log_path.write_bytes(b"")
                self._launch(self._prepare(binary))
                try:
                    self._wait_ready()
                    return
                except ProxyError:
                    in_use = "in use" in self._diagnostics().lower()
                    self._terminate()
                    if not in_use or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the proxy and its children, reap them and delete the directory (idempotent)."""
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _launch(self, command: list[str]) -> None:
        assert self.directory is not None
        self._output = open(self.directory / "output.log", "wb")  # noqa: SIM115 - closed in stop
        # The kernel signals the proxy when the thread that started it exits (only from the
        # main thread, which lives as long as the process).
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            cwd=self.directory,
            # dante creates its temporary files in TMPDIR.
            env={**os.environ, "TMPDIR": str(self.directory)},
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _emergency_cleanup, self.process, self.directory)

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while not _process_listens(self.process.pid, self.port):
            if self.process.poll() is not None:
                raise ProxyError(
                    f"{self.program} exited with status {self.process.returncode} at start\n"
                    f"{self._diagnostics()}"
                )
            if time.monotonic() >= deadline:
                raise ProxyError(
                    f"{self.program} did not listen on port {self.port} within "
                    f"{self.start_timeout}s\n{self._diagnostics()}"
                )
            time.sleep(0.005)

    def _terminate(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        process, self.process = self.process, None
        if process is not None:
            _stop_process(process)
        if self._output is not None:
            self._output.close()
            self._output = None

    def _diagnostics(self) -> str:
        if self.directory is None:
            return ""
        output = _read_since(self.directory / "output.log", 0)
        return f"--- output ---\n{output[-4000:]}\n--- log ---\n{self.log_text()[-4000:]}"

    # -- addresses and logs ----------------------------------------------------------------

    def _require_started(self) -> None:
        if self.process is None:
            raise ProxyError(f"{self.program} is not running")

    @property
    def url(self) -> str:
        """`scheme://127.0.0.1:PORT`, without credentials."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def url_with_auth(self) -> str:
        """`scheme://USER:PASS@127.0.0.1:PORT` (only for a proxy with credentials)."""
        if self.username is None or self.password is None:
            raise ProxyError(f"{self!r} has no credentials")
        credentials = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}"
        return f"{self.scheme}://{credentials}@{self.host}:{self.port}"

    def log_text(self, since: int = 0) -> str:
        """The proxy's log (complete lines), from byte offset `since` (see `mark()`)."""
        if self.directory is None:
            return ""
        return _read_since(self.log_path, since)

    def mark(self) -> int:
        """The log's current end: pass as `since=` to see only what happens from now on."""
        self._require_started()
        return _file_size(self.log_path)


@dataclass(frozen=True)
class TinyproxyLog:
    """What tinyproxy logged (at level Connect) over some stretch of time.

    Every line is written before tinyproxy answers the request it is about, so once a client
    has its response these are complete for that request. A request refused with 407 is
    logged (connection and request line) like any other, with no upstream connection.
    """

    accepted: int  # client connections accepted ("Connect (file descriptor N): 127.0.0.1")
    request_lines: list[str]  # every request line, e.g. "GET http://127.0.0.1:8080/ HTTP/1.1"
    connects: list[str]  # CONNECT targets, e.g. "127.0.0.1:8443"
    requests: list[str]  # the request lines of forward (non-CONNECT) requests
    established: list[str]  # hosts tinyproxy opened an upstream connection to
    errors: list[str]  # ERROR lines (e.g. "opensock: Could not establish a connection to ...")


_TINYPROXY_LINE = re.compile(r"^(\w+)\s+.*?\[\d+\]: (.*)$")
_TINYPROXY_ACCEPT = re.compile(r"Connect \(file descriptor \d+\): ")
_TINYPROXY_REQUEST = re.compile(r"Request \(file descriptor \d+\): (.*)$")
_TINYPROXY_ESTABLISHED = re.compile(r'Established connection to host "(.*)" using file descriptor')


class Tinyproxy(_ProcessProxy):
    """tinyproxy in the foreground (`-d`), listening on 127.0.0.1.

    Configuration: `Allow 127.0.0.0/8`, `Bind 127.0.0.1` (outgoing), no `ConnectPort` line (so
    CONNECT is allowed to every port), `MaxClients` (one thread per client connection),
    `Timeout` (idle seconds), `ViaProxyName "tinyproxy"`, `LogLevel Connect`, and
    `BasicAuth` when credentials are given. Then a request without `Proxy-Authorization`
    gets 407 with `Proxy-Authenticate: Basic realm="Tinyproxy"`, but one with wrong
    credentials (or another scheme) gets 401 with `WWW-Authenticate: Basic realm="Tinyproxy"`
    (tinyproxy 1.11's choice); both are HTTP/1.0 with `Connection: close`.

    Behaviour worth knowing: tinyproxy serves one request per client connection. A forwarded
    response keeps the server's framing and no `Connection: close`, yet tinyproxy closes the
    connection after it (it asked the server to close); a pooling client meets a closed idle
    connection on its next request. A target that refuses the connection gets "500 Unable to
    connect" (not 502). Forwarded requests gain `Via: 1.1 tinyproxy (tinyproxy/VERSION)`.
    """

    program = "tinyproxy"
    scheme = "http"

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        max_clients: int = 256,
        idle_timeout: int = 60,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(username=username, password=password, start_timeout=start_timeout)
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout

    def __enter__(self) -> Tinyproxy:
        self.start()
        return self

    def _prepare(self, binary: str) -> list[str]:
        assert self.directory is not None
        lines = [
            f"Port {self.port}",
            f"Listen {HOST}",
            f"Bind {HOST}",
            "Allow 127.0.0.0/8",
            f"Timeout {self.idle_timeout}",
            f"MaxClients {self.max_clients}",
            f'LogFile "{self.log_path}"',
            "LogLevel Connect",
            'ViaProxyName "tinyproxy"',
        ]
        if self.username is not None:
            lines.append(f"BasicAuth {self.username} {self.password}")
        config = self.directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        return [binary, "-d", "-c", str(config)]

    def log(self, since: int = 0) -> TinyproxyLog:
        """The log from byte offset `since` (`mark()`), parsed."""
        accepted = 0
        request_lines: list[str] = []
        established: list[str] = []
        errors: list[str] = []
        for line in self.log_text(since).splitlines():
            match = _TINYPROXY_LINE.match(line)
            if match is None:
                continue
            level, message = match.groups()
            if level == "ERROR":
                errors.append(message)
            if _TINYPROXY_ACCEPT.match(message):
                accepted += 1
            elif request := _TINYPROXY_REQUEST.match(message):
                request_lines.append(request.group(1))
            elif host := _TINYPROXY_ESTABLISHED.match(message):
                established.append(host.group(1))
        connects = [line.split()[1] for line in request_lines if line.startswith("CONNECT ")]
        requests = [line for line in request_lines if not line.startswith("CONNECT ")]
        return TinyproxyLog(accepted, request_lines, connects, requests, established, errors)

    def connects(self, since: int = 0) -> list[str]:
        """CONNECT targets requested since `since`, e.g. ["127.0.0.1:8443"]."""
        return self.log(since).connects

    def requests(self, since: int = 0) -> list[str]:
        """Forward request lines since `since`, e.g. ["GET http://127.0.0.1:80/ HTTP/1.1"]."""
        return self.log(since).requests

    def accepted(self, since: int = 0) -> int:
        """Client connections accepted since `since`."""
        return self.log(since).accepted

    def wait_for_log(
        self, predicate: Callable[[TinyproxyLog], bool], since: int = 0, timeout: float = 5.0
    ) -> TinyproxyLog:
        """Poll `log(since)` until `predicate` holds for it."""
        return poll_until(lambda: self.log(since), predicate, timeout, "tinyproxy log")


class Microsocks(_ProcessProxy):
    """microsocks: SOCKS5 (CONNECT; IPv4, IPv6 and domain-name targets), listening on
    127.0.0.1 with outgoing connections bound to 127.0.0.1. With credentials it accepts
    only the username/password method (a client offering only "no authentication" gets
    0xFF), and answers a wrong password with status 1. It logs nothing."""

    program = "microsocks"
    scheme = "socks5"

    def __enter__(self) -> Microsocks:
        self.start()
        return self

    def _prepare(self, binary: str) -> list[str]:
        command = [binary, "-i", HOST, "-p", str(self.port), "-b", HOST]
        if self.username is not None and self.password is not None:
            command += ["-u", self.username, "-P", self.password]
        return command


_DANTE_CONNECTED = re.compile(r"tcp/connect \[: .* -> \S+ (\S+)\s*$")


class Dante(_ProcessProxy):
    """dante (danted): SOCKS4 and SOCKS5 (CONNECT, no authentication) on 127.0.0.1, passing
    only loopback targets, with outgoing connections from 127.0.0.1. `url` is socks4://,
    `socks5_url` the same port as SOCKS5. SOCKS4a is not supported: dante takes the
    0.0.0.x address literally and the connect fails.

    Its log has a line per target it connected to (`targets()`), written once the tunnel is
    up, which can be a moment after the client got its reply: use `wait_for_targets`.
    As root, dante runs as root (`user.privileged`/`user.unprivileged`): it must read and
    write its private directory, which the `nobody` user it would pick cannot.
    """

    program = "danted"
    scheme = "socks4"

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        super().__init__(start_timeout=start_timeout)

    def __enter__(self) -> Dante:
        self.start()
        return self

    def _prepare(self, binary: str) -> list[str]:
        assert self.directory is not None
        user = ""
        if os.geteuid() == 0:
            name = pwd.getpwuid(os.geteuid()).pw_name
            user = f"user.privileged: {name}\nuser.unprivileged: {name}\n"
        config = self.directory / "danted.conf"
        config.write_text(
            f"logoutput: {self.log_path}\n"
            f"internal: {HOST} port = {self.port}\n"
            f"external: {HOST}\n"
            "clientmethod: none\n"
            "socksmethod: none\n"
            f"{user}"
            "client pass {\n"
            "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
            "    log: error\n"
            "}\n"
            "socks pass {\n"
            "    from: 127.0.0.0/8 to: 127.0.0.0/8\n"
            "    protocol: tcp\n"
            "    command: connect\n"
            "    log: connect error\n"
            "}\n"
            "socks block {\n"
            "    from: 0.0.0.0/0 to: 0.0.0.0/0\n"
            "    log: connect error\n"
            "}\n"
        )
        return [binary, "-f", str(config), "-N", "1", "-p", str(self.directory / "danted.pid")]

    @property
    def socks5_url(self) -> str:
        return f"socks5://{self.host}:{self.port}"

    def targets(self, since: int = 0) -> list[str]:
        """ "host:port" of every target dante connected to since `since` (`mark()`)."""
        found = []
        for line in self.log_text(since).splitlines():
            match = _DANTE_CONNECTED.search(line)
            if match is not None:
                address, _, port = match.group(1).rpartition(".")
                found.append(f"{address}:{port}")
        return found

    def wait_for_targets(
        self, predicate: Callable[[list[str]], bool], since: int = 0, timeout: float = 5.0
    ) -> list[str]:
        """Poll `targets(since)` until `predicate` holds for it."""
        return poll_until(lambda: self.targets(since), predicate, timeout, "dante targets")


@dataclass(frozen=True)
class StunnelLog:
    """What stunnel logged (at level info) about client connections over some stretch of time.

    The accept and handshake lines are written before stunnel reads the first request byte,
    so they are complete once a client has its response; a `transfers` entry is written when
    the connection ends (stunnel has closed both sides), a moment after the client saw it end.
    """

    accepted: int  # TCP connections accepted ("Service [https-proxy] accepted connection ...")
    handshakes: int  # TLS handshakes completed ("TLS accepted: ...")
    resumed: int  # of those, sessions resumed ("TLS accepted: previous session reused")
    transfers: list[tuple[int, int]]  # per ended connection: (bytes to the client, to upstream)
    handshake_errors: list[str]  # "SSL_accept: ...", e.g. "...: tlsv1 alert unknown ca"
    errors: list[str]  # every error line about a connection (handshake errors included)


_STUNNEL_LINE = re.compile(r"^\S+ \S+ LOG(\d)\[([^\]]*)\]: (.*)$")
_STUNNEL_ACCEPTED = re.compile(r"Service \[[^\]]*\] accepted connection from ")
_STUNNEL_HANDSHAKE = re.compile(r"TLS accepted: (new session negotiated|previous session reused)")
_STUNNEL_CLOSED = re.compile(
    r"Connection (?:closed|reset|reset/closed): (\d+) byte\(s\) sent to TLS, "
    r"(\d+) byte\(s\) sent to socket"
)
_STUNNEL_SSL_ACCEPT = re.compile(r"SSL_accept: (.*)$")


class Stunnel(_ProcessProxy):
    """An https:// proxy: stunnel in server mode on 127.0.0.1, terminating TLS with the
    server certificate of `certs` (names: localhost, 127.0.0.1, ::1; issuer `certs.ca_path`)
    and passing the plaintext to `upstream`, a running `Tinyproxy` (with its credentials, if
    any: `url_with_auth`). The proxying is tinyproxy's, with all its habits (one request per
    connection, 407/401, 500 for an unreachable target); `tinyproxy` is its log.

    Configuration: `foreground = quiet` (no fork; the log goes only to `output`), no pid file,
    no syslog, `debug = info`, TLS 1.2 and 1.3, session resumption (stunnel's default cache;
    TLS 1.3 tickets), TCP_NODELAY both ways, outgoing connections from 127.0.0.1, the default
    `TIMEOUTclose` (after its close_notify stunnel waits up to 60 s for the client's, or for
    its close). The key is copied into the private directory with mode 0600 (stunnel warns
    about a readable key).

    Half-close: stunnel turns a client's close_notify into a FIN to tinyproxy and keeps
    relaying the other way; a bare FIN without close_notify ends the whole connection. But
    tinyproxy ends a CONNECT tunnel as soon as the client side closes, so through this proxy a
    client that half-closes loses whatever the target answers afterwards.
    """

    program = "stunnel4"
    scheme = "https"

    def __init__(
        self, upstream: Tinyproxy, certs: CertBundle, *, start_timeout: float = 10.0
    ) -> None:
        super().__init__(
            username=upstream.username, password=upstream.password, start_timeout=start_timeout
        )
        self.tinyproxy = upstream
        self.certs = certs
        self.ca_path = certs.ca_path

    def __enter__(self) -> Stunnel:
        self.start()
        return self

    def _find_binary(self) -> str | None:
        # Debian installs stunnel4 (and a stunnel link to it); elsewhere it is stunnel.
        return find_binary("stunnel4") or find_binary("stunnel")

    def _prepare(self, binary: str) -> list[str]:
        assert self.directory is not None
        self.tinyproxy._require_started()
        key = self.directory / "server-key.pem"
        if not key.exists():
            key.touch(mode=0o600)
            key.write_bytes(self.certs.key_path.read_bytes())
        config = self.directory / "stunnel.conf"
        config.write_text(
            "foreground = quiet\n"
            "pid =\n"
            "syslog = no\n"
            f"output = {self.log_path}\n"
            "debug = info\n"
            "[https-proxy]\n"
            f"accept = {HOST}:{self.port}\n"
            f"connect = {self.tinyproxy.host}:{self.tinyproxy.port}\n"
            f"local = {HOST}\n"
            f"cert = {self.certs.cert_path}\n"
            f"key = {key}\n"
            "sslVersionMin = TLSv1.2\n"
            "socket = l:TCP_NODELAY=1\n"
            "socket = r:TCP_NODELAY=1\n"
        )
        return [binary, str(config)]

    def log(self, since: int = 0) -> StunnelLog:
        """The log from byte offset `since` (`mark()`), parsed."""
        accepted = handshakes = resumed = 0
        transfers: list[tuple[int, int]] = []
        handshake_errors: list[str] = []
        errors: list[str] = []
        for line in self.log_text(since).splitlines():
            match = _STUNNEL_LINE.match(line)
            if match is None or not match.group(2).isdigit():  # [ui], [cron]: not a client
                continue
            level, message = int(match.group(1)), match.group(3)
            if level <= 3:
                errors.append(message)
            if _STUNNEL_ACCEPTED.match(message):
                accepted += 1
            elif handshake := _STUNNEL_HANDSHAKE.match(message):
                handshakes += 1
                resumed += handshake.group(1) == "previous session reused"
            elif closed := _STUNNEL_CLOSED.match(message):
                transfers.append((int(closed.group(1)), int(closed.group(2))))
            elif failed := _STUNNEL_SSL_ACCEPT.match(message):
                handshake_errors.append(failed.group(1))
        return StunnelLog(accepted, handshakes, resumed, transfers, handshake_errors, errors)

    def accepted(self, since: int = 0) -> int:
        """TCP connections stunnel accepted since `since` (handshake completed or not)."""
        return self.log(since).accepted

    def wait_for_log(
        self, predicate: Callable[[StunnelLog], bool], since: int = 0, timeout: float = 5.0
    ) -> StunnelLog:
        """Poll `log(since)` until `predicate` holds for it."""
        return poll_until(lambda: self.log(since), predicate, timeout, "stunnel log")


# --------------------------------------------------------------------------------------------
# The scripted proxy

ProxyMode = Literal[
    "relay",
    "status",
    "garbage",
    "close",
    "close_on_accept",
    "silent",
    "socks5_reply",
    "socks5_no_methods",
    "socks5_auth_rejected",
    "socks4_reply",
]
_MODES = frozenset(get_args(ProxyMode))

DEFAULT_GARBAGE = b"NOT A PROXY \x00\xff\xfe garbage\r\n\r\n"

# Limits: generous for tests, bounded so a runaway client cannot exhaust memory.
_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_MAX_RECORDED = 1024 * 1024
_READ_SIZE = 64 * 1024

# SOCKS5 replies for a target that could not be used.
_SOCKS5_NOT_ALLOWED = 0x02
_SOCKS5_UNREACHABLE = 0x04
_SOCKS5_REFUSED = 0x05
_SOCKS5_COMMAND_NOT_SUPPORTED = 0x07
_SOCKS4_GRANTED = 0x5A
_SOCKS4_REJECTED = 0x5B


@dataclass
class ProxyRequest:
    """One request a client made to the scripted proxy, byte for byte in `raw`.

    HTTP (a CONNECT or a forward request): `method`, `target` (as sent: "host:port" for
    CONNECT, the absolute URL for a forward request), `version`, `headers`, `body`.
    SOCKS: `command` (1 = CONNECT), `address_type` ("ipv4", "ipv6", "domain"), `methods`
    (SOCKS5 authentication methods offered), `username` / `password` (SOCKS5
    username/password; SOCKS4 user id in `username`). All kinds: `host` and `port` of the
    destination the client asked for (empty/0 when it did not get that far), `destination`.

    A SOCKS request is recorded as soon as its first message arrives and completed as the
    handshake goes on; `raw` is everything the client sent before the tunnel started
    (greeting, authentication, request), or for HTTP the request head and body.
    """

    protocol: Literal["http", "socks4", "socks5"]
    connection_index: int
    raw: bytes = b""
    method: str = ""
    target: str = ""
    version: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    command: int = 0
    address_type: str = ""
    host: str = ""
    port: int = 0
    methods: bytes = b""
    username: str | None = None
    password: str | None = None

    def get(self, name: str) -> str | None:
        """The first header `name` (case-insensitive), or None."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    @property
    def destination(self) -> str:
        """ "host:port" ("[::1]:port" for IPv6), or "" if the client named none."""
        if not self.host:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class ProxyConnection:
    """One client connection to the scripted proxy."""

    index: int
    peer: tuple[str, int]
    protocol: str = ""  # "http", "socks4", "socks5"; "" before the first byte
    received: bytes = b""  # every byte the client sent outside a tunnel (first 1 MiB)
    tunnel: str = ""  # destination of the tunnel, once one was opened
    sent_upstream: int = 0  # bytes relayed client -> target
    sent_downstream: int = 0  # bytes relayed target -> client
    closed: bool = False


class _Stopped(Exception):
    """The proxy is stopping."""


class _Eof(Exception):
    """The client closed its side."""


class _ReadTimeout(Exception):
    """The client sent nothing for `read_timeout` seconds."""


class _ProtocolError(Exception):
    """The client sent something this proxy cannot parse, or a kind it does not serve."""


class _TargetError(Exception):
    def __init__(self, kind: Literal["not_allowed", "refused", "unreachable"]) -> None:
        super().__init__(kind)
        self.kind = kind


class _ServerTls:
    """The server side of TLS over a blocking socket, through memory BIOs: the socket stays
    what the selectors watch, and every record that arrives is decrypted at once, so no
    plaintext waits inside OpenSSL while a select() waits on the socket."""

    def __init__(self, context: ssl.SSLContext, sock: socket.socket) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.eof = False  # the client sent close_notify, or closed the socket
        self.closing = False  # our close_notify is written

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def feed(self, raw: bytes) -> None:
        """Bytes from the socket (b"": it was closed)."""
        if raw:
            self.incoming.write(raw)
        else:
            self.incoming.write_eof()

    def handshake(self) -> bool:
        """One step; True once complete. Raises ssl.SSLError when it fails (the alert for the
        client is sent first)."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return False
        except ssl.SSLError:
            with contextlib.suppress(OSError):
                self.flush()
            raise
        self.flush()  # the last flight, and TLS 1.3 session tickets
        return True

    def read_available(self) -> bytes:
        """All the plaintext the records received so far hold (sets `eof` at their end)."""
        chunks = []
        while not self.eof:
            try:
                chunk = self.obj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # close_notify / a bare FIN
                chunk = b""
            # b"": close_notify (the ssl module raises SSLZeroReturnError for it only once
            # ours was sent too).
            if chunk:
                chunks.append(chunk)
            else:
                self.eof = True
        self.flush()  # answers to post-handshake messages, if any
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.obj.write(view) :]
        self.flush()

    def close_notify(self) -> bytes:
        """Write close_notify (once); the bytes to send."""
        if not self.closing:
            self.closing = True
            with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: the client's is due
                self.obj.unwrap()
        return self.outgoing.read()


class _Channel:
    """The client side of one connection: a read buffer, reads bounded by a deadline that
    give up when the proxy stops (the wake socket becomes readable), and the bytes consumed
    since the last `take()`. After `start_tls` all of it goes through TLS."""

    def __init__(
        self,
        sock: socket.socket,
        wake: socket.socket,
        record: ProxyConnection,
        timeout: float | None,
    ) -> None:
        self.sock = sock
        self.wake = wake
        self.record = record
        self.timeout = timeout
        self.buffer = b""
        self.consumed = b""
        self.tls: _ServerTls | None = None
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.selector.register(wake, selectors.EVENT_READ)

    def close(self) -> None:
        self.selector.close()
        if self.tls is not None and not self.tls.closing:
            # Every ending is announced, without blocking on a client that does not read.
            data = self.tls.close_notify()
            with contextlib.suppress(OSError):
                self.sock.setblocking(False)
                self.sock.send(data)

    def start_tls(self, context: ssl.SSLContext) -> None:
        """The server side of a TLS handshake (bounded by the read time-out); ssl.SSLError if
        it fails. Plaintext that came with the client's last flight is kept."""
        tls = _ServerTls(context, self.sock)
        deadline = self._deadline()
        while not tls.handshake():
            self._wait(deadline)
            tls.feed(self.sock.recv(_READ_SIZE))
        self.tls = tls
        self._absorb(tls.read_available())

    @property
    def at_eof(self) -> bool:
        """The client's end of the TLS stream was read (with data still in `buffer`)."""
        return self.tls is not None and self.tls.eof

    def receive(self) -> tuple[bytes, bool]:
        """After the socket selected readable: (plaintext, whether the client's side ended).
        Over TLS the plaintext may be b"" without an end (a record that held none)."""
        raw = self.sock.recv(_READ_SIZE)
        if self.tls is None:
            return raw, not raw
        self.tls.feed(raw)
        return self.tls.read_available(), self.tls.eof

    def _wait(self, deadline: float | None) -> None:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _ReadTimeout()
            events = self.selector.select(remaining)
            if any(key.fileobj is self.wake for key, _ in events):
                raise _Stopped()
            if events:
                return

    def _fill(self, deadline: float | None) -> None:
        while True:
            if self.at_eof:
                raise _Eof()
            self._wait(deadline)
            data, eof = self.receive()
            if data:
                self._absorb(data)
                return
            if eof:
                raise _Eof()

    def _absorb(self, data: bytes) -> None:
        self.buffer += data
        room = _MAX_RECORDED - len(self.record.received)
        if room > 0:
            self.record.received += data[:room]

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _consume(self, size: int) -> bytes:
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.consumed += data
        return data

    def peek(self, size: int) -> bytes:
        deadline = self._deadline()
        while len(self.buffer) < size:
            self._fill(deadline)
        return self.buffer[:size]

    def read_exact(self, size: int) -> bytes:
        self.peek(size)
        return self._consume(size)

    def read_until(self, delimiter: bytes, limit: int) -> bytes:
        """Up to and including `delimiter`."""
        deadline = self._deadline()
        while (end := self.buffer.find(delimiter)) < 0:
            if len(self.buffer) > limit:
                raise _ProtocolError(f"no {delimiter!r} within {limit} bytes")
            self._fill(deadline)
        return self._consume(end + len(delimiter))

    def take(self) -> bytes:
        data, self.consumed = self.consumed, b""
        return data

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.sendall(data)
        else:
            self.tls.write(data)

    def shutdown_write(self) -> None:
        """FIN (over TLS: close_notify, then FIN); the client may go on sending."""
        with contextlib.suppress(OSError):
            if self.tls is not None:
                self.sock.sendall(self.tls.close_notify())
            self.sock.shutdown(socket.SHUT_WR)

    def sleep(self, seconds: float) -> None:
        """Wait, unless the proxy stops first (client data stays unread meanwhile)."""
        self.selector.unregister(self.sock)
        try:
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                if self.selector.select(remaining):
                    raise _Stopped()
        finally:
            self.selector.register(self.sock, selectors.EVENT_READ)

    def hold(self) -> None:
        """Read and record whatever comes, answer nothing, until the client closes."""
        try:
            while True:
                self._fill(None)
                self.buffer = b""
        except _Eof:
            return

    def finish(self) -> None:
        """Close gracefully: FIN (over TLS: close_notify first), then read until the client
        closes (at most 1 s), so that unread input does not turn the close into an RST that
        could destroy the reply."""
        self.shutdown_write()
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(_Eof, _ReadTimeout, OSError):
            while True:
                self._fill(deadline)
                self.buffer = b""


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _ProtocolError(f"malformed request line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _ProtocolError(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return parts[0], parts[1], parts[2], headers


def _split_authority(authority: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port); ValueError if malformed."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        if not rest.startswith(":"):
            raise ValueError(authority)
        return host, int(rest[1:])
    host, colon, port = authority.rpartition(":")
    if not colon or not host:
        raise ValueError(authority)
    return host, int(port)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class ScriptedProxy:
    """An in-process proxy on 127.0.0.1 whose behaviour is its `mode`; a context manager.

    Modes (HTTP: after reading a complete request; SOCKS5: after the greeting; SOCKS4: after
    the request):

      "relay"                 a working proxy: CONNECT -> "200 Connection established" and a
                              tunnel; a forward request -> answered by the proxy itself
                              (200, `forward_body`, keep-alive, header `X-Proxy-Connection:
                              <connection index>`); SOCKS4, SOCKS4a and SOCKS5 CONNECT ->
                              a tunnel. `auth=(user, password)` requires Basic
                              `Proxy-Authorization` (else 407 with `Proxy-Authenticate:
                              Basic realm="scripted-proxy"`, keep-alive) and SOCKS5
                              username/password (else 0xFF, or status 1 for wrong ones).
                              Targets: loopback addresses, and the names in `names`
                              (default: localhost -> 127.0.0.1), never resolved through DNS;
                              any other target gets 403 / SOCKS5 0x02 / SOCKS4 0x5B.
      "status"                HTTP: reply `status` (403, 502, ...) with `headers` and `body`,
                              then close (`keep_alive=True`: answer every request so). A
                              407 gets `Proxy-Authenticate: Basic realm="x"` unless
                              `headers` are given.
      "garbage"               send `data` (not HTTP, not SOCKS), then close.
      "close"                 close (FIN) without a reply.
      "close_on_accept"       close before reading anything.
      "silent"                never reply; keep reading until the client closes (time-outs).
      "socks5_reply"          SOCKS5: accept the method offered (no auth, or any username
                              and password), read the request, reply with code `reply`
                              (e.g. 0x05 connection refused, 0x01 general failure), close.
      "socks5_no_methods"     SOCKS5: answer the greeting with 0xFF (no acceptable method).
      "socks5_auth_rejected"  SOCKS5: choose username/password (0xFF if not offered), read
                              them, answer status 1 (failure), close.
      "socks4_reply"          SOCKS4: reply with code `reply` (0x5B rejected, 0x5C, 0x5D).

    `delay` seconds pass before each reply. A client of the wrong protocol for a mode is
    closed and counted in `protocol_errors`. Every request is recorded (`requests`,
    `targets`, `connections[i].received`), whatever the mode.

    `tls` (a CertBundle or a server SSLContext) makes it an https:// proxy: every connection
    is a TLS server first (within `read_timeout`), then the mode runs inside TLS, SOCKS
    included; `url()` is https://. Every ending sends close_notify before the FIN (in
    "close_on_accept" right after the handshake; for a close during the handshake use the
    mode without `tls`). A failed handshake (a client that does not trust the certificate, or
    speaks plaintext) or any later TLS error is recorded in `tls_errors`, not raised. Tunnels
    pass a client's close_notify on as a FIN, and a target's FIN as close_notify and FIN.
    """

    def __init__(
        self,
        mode: ProxyMode = "relay",
        *,
        status: int = 502,
        headers: Sequence[tuple[str, str]] | None = None,
        body: bytes = b"",
        keep_alive: bool = False,
        data: bytes = DEFAULT_GARBAGE,
        reply: int = 0x01,
        auth: tuple[str, str] | None = None,
        delay: float = 0.0,
        forward_body: bytes = b"proxied\n",
        names: Mapping[str, str] | None = None,
        max_connections: int = 64,
        read_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        tls: CertBundle | ssl.SSLContext | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {sorted(_MODES)}")
        self.mode = mode
        self.status = status
        if headers is None:
            headers = [("Proxy-Authenticate", 'Basic realm="x"')] if status == 407 else []
        self.headers = list(headers)
        self.body = body
        self.keep_alive = keep_alive
        self.data = data
        self.reply = reply
        self.auth = auth
        self.delay = delay
        self.forward_body = forward_body
        self.names = {
            name.lower(): address
            for name, address in (names if names is not None else {"localhost": HOST}).items()
        }
        for address in self.names.values():
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"{address} is not a loopback address")
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.tls: ssl.SSLContext | None = (
            tls.server_context() if isinstance(tls, CertBundle) else tls
        )
        self.host = HOST
        self.port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections: list[ProxyConnection] = []
        self._requests: list[ProxyRequest] = []
        self._protocol_errors: list[str] = []
        self._tls_errors: list[str] = []
        self._internal_errors: list[str] = []
        self._active = 0
        self._max_active = 0
        self._over_limit = 0
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._wake_read: socket.socket | None = None
        self._wake_write: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopped = False

    def __enter__(self) -> ScriptedProxy:
        self.start()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # An internal error must not mask the exception already failing the test.
        self.stop(raise_errors=exc_type is None)

    def __repr__(self) -> str:
        return f"<ScriptedProxy {self.mode} on {self.host}:{self.port}>"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def default_scheme(self) -> str:
        return "http" if self.tls is None else "https"

    def url(self, scheme: str | None = None) -> str:
        """`scheme://127.0.0.1:PORT` ("http", "socks5", "socks4", ...: one port serves all;
        the default is "http", or "https" with `tls`)."""
        return f"{scheme or self.default_scheme}://{self.host}:{self.port}"

    def url_with_auth(self, scheme: str | None = None) -> str:
        scheme = scheme or self.default_scheme
        if self.auth is None:
            raise ValueError("this proxy has no credentials (auth=None)")
        user, password = (quote(part, safe="") for part in self.auth)
        return f"{scheme}://{user}:{password}@{self.host}:{self.port}"

    # -- records -----------------------------------------------------------------------------

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._connections) + self._over_limit

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    @property
    def max_active(self) -> int:
        with self._lock:
            return self._max_active

    @property
    def over_limit(self) -> int:
        """Connections closed at once because `max_connections` were being served."""
        with self._lock:
            return self._over_limit

    @property
    def connections(self) -> list[ProxyConnection]:
        with self._lock:
            return list(self._connections)

    @property
    def requests(self) -> list[ProxyRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def targets(self) -> list[str]:
        """The destination of every request that named one, in arrival order."""
        return [request.destination for request in self.requests if request.destination]

    @property
    def protocol_errors(self) -> list[str]:
        with self._lock:
            return list(self._protocol_errors)

    @property
    def tls_errors(self) -> list[str]:
        """Failed TLS handshakes and other TLS errors ("connection N: [SSL: ...] ..."), with
        `tls` only."""
        with self._lock:
            return list(self._tls_errors)

    def wait_for(self, predicate: Callable[[ScriptedProxy], bool], timeout: float = 5.0) -> None:
        """Block until `predicate(proxy)` holds; TimeoutError if it does not in time."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not reached within {timeout}s: {self._summary()}")
            with self._changed:
                self._changed.wait(min(remaining, 0.05))

    async def wait_for_async(
        self, predicate: Callable[[ScriptedProxy], bool], timeout: float = 5.0
    ) -> None:
        """`wait_for` for async tests: polls without blocking the test's loop."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not reached within {timeout}s: {self._summary()}")
            await asyncio.sleep(0.005)

    def _summary(self) -> str:
        return (
            f"accepted={self.accepted} active={self.active} targets={self.targets} "
            f"protocol_errors={self.protocol_errors} tls_errors={self.tls_errors}"
        )

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ScriptedProxy:
        if self._listener is not None:
            raise RuntimeError("already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((HOST, 0))
            listener.listen(128)
            listener.setblocking(False)
            self._wake_read, self._wake_write = socket.socketpair()
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"scripted-proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, raise_errors: bool = True) -> None:
        """Stop accepting, end every connection (the client sees a close), join every
        thread. Raises ProxyHandlerError if the proxy itself failed (idempotent)."""
        if self._listener is None or self._stopped:
            return
        self._stopped = True
        assert self._wake_write is not None
        assert self._wake_read is not None
        self._wake_write.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        self._listener.close()
        # Threads blocked in a send to a client that does not read are woken by the shutdown.
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            self._internal_errors.append(f"threads did not stop: {alive}")
        else:
            self._wake_write.close()
            self._wake_read.close()
        if raise_errors and self._internal_errors:
            raise ProxyHandlerError("\n".join(self._internal_errors))

    def _accept_loop(self) -> None:
        assert self._listener is not None
        assert self._wake_read is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj is self._wake_read for key, _ in events):
                    return
                try:
                    sock, peer = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    self._internal_errors.append(f"accept failed: {exc!r}")
                    return
                with self._lock:
                    if self._active >= self.max_connections:
                        self._over_limit += 1
                        sock.close()
                        continue
                    record = ProxyConnection(index=len(self._connections), peer=peer)
                    self._connections.append(record)
                    self._active += 1
                    self._max_active = max(self._max_active, self._active)
                    self._sockets.add(sock)
                    thread = threading.Thread(
                        target=self._serve,
                        args=(sock, record),
                        name=f"scripted-proxy-{self.port}-{record.index}",
                        daemon=True,
                    )
                    self._threads.add(thread)
                thread.start()
                self._notify()

    def _close(self, sock: socket.socket) -> None:
        # Under the lock, so `stop()` never shuts down a descriptor number already reused.
        with self._lock:
            self._sockets.discard(sock)
            sock.close()

    # -- one connection ------------------------------------------------------------------

    def _serve(self, sock: socket.socket, record: ProxyConnection) -> None:
        assert self._wake_read is not None
        # "silent" never gives up on a client, however quiet.
        timeout = None if self.mode == "silent" else self.read_timeout
        channel = _Channel(sock, self._wake_read, record, timeout)
        upstream: list[socket.socket] = []
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None and not self._handshake(channel):
                return
            if self.mode == "close_on_accept":
                if self.tls is not None:
                    channel.finish()
                return
            first = channel.peek(1)[0]
            if first == 5:
                record.protocol = "socks5"
                self._serve_socks5(channel, upstream)
            elif first == 4:
                record.protocol = "socks4"
                self._serve_socks4(channel, upstream)
            else:
                record.protocol = "http"
                self._serve_http(channel, upstream)
        except (_Eof, _Stopped, _ReadTimeout, ConnectionError):
            pass
        except _ProtocolError as exc:
            with self._lock:
                self._protocol_errors.append(f"connection {record.index}: {exc}")
        except ssl.SSLError as exc:  # before OSError, its base class
            if not self._stopped:
                with self._lock:
                    self._tls_errors.append(f"connection {record.index}: {exc}")
        except OSError as exc:
            if not self._stopped:
                with self._lock:
                    self._protocol_errors.append(f"connection {record.index}: {exc!r}")
        except Exception:
            self._internal_errors.append(traceback.format_exc())
        finally:
            channel.close()
            for other in upstream:
                self._close(other)
            self._close(sock)
            with self._lock:
                record.closed = True
                self._active -= 1
                self._threads.discard(threading.current_thread())
            self._notify()

    def _handshake(self, channel: _Channel) -> bool:
        """TLS with the client; False (recorded in `tls_errors`) if the client reset the
        connection or stayed silent. A failure OpenSSL reports raises ssl.SSLError."""
        assert self.tls is not None
        try:
            channel.start_tls(self.tls)
            return True
        except _ReadTimeout:
            error = f"no TLS handshake within {self.read_timeout}s"
        except ConnectionError as exc:
            error = f"during the TLS handshake: {exc!r}"
        with self._lock:
            self._tls_errors.append(f"connection {channel.record.index}: {error}")
        return False

    def _add(self, request: ProxyRequest) -> None:
        with self._lock:
            self._requests.append(request)
        self._notify()

    def _pre_reply(self, channel: _Channel) -> bool:
        """The generic modes; True if the connection is done with."""
        if self.delay:
            channel.sleep(self.delay)
        if self.mode == "close":
            return True
        if self.mode == "silent":
            channel.hold()
            return True
        if self.mode == "garbage":
            channel.send(self.data)
            channel.finish()
            return True
        return False

    def _open(self, host: str, port: int, upstream: list[socket.socket]) -> socket.socket:
        """Connect to a loopback target (or a name from `names`)."""
        address = self.names.get(host.lower())
        if address is None:
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    raise _TargetError("not_allowed")
            except ValueError:
                raise _TargetError("not_allowed") from None
            address = host
        try:
            sock = socket.create_connection((address, port), timeout=self.connect_timeout)
        except ConnectionRefusedError:
            raise _TargetError("refused") from None
        except OSError:
            raise _TargetError("unreachable") from None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.add(sock)
        upstream.append(sock)
        return sock

    def _tunnel(self, channel: _Channel, target: socket.socket, destination: str) -> None:
        """Relay both ways until both sides closed (half-closes are passed on)."""
        record = channel.record
        record.tunnel = destination
        self._notify()
        if channel.buffer:
            target.sendall(channel.buffer)
            record.sent_upstream += len(channel.buffer)
            channel.buffer = b""
        channel.selector.register(target, selectors.EVENT_READ)
        open_ends = 2

        def client_ended() -> None:
            nonlocal open_ends
            channel.selector.unregister(channel.sock)
            open_ends -= 1
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

        if channel.at_eof:  # over TLS, close_notify can come with the request
            client_ended()
        while open_ends:
            for key, _ in channel.selector.select():
                if key.fileobj is channel.wake:
                    raise _Stopped()
                if key.fileobj is target:
                    data = target.recv(_READ_SIZE)
                    if data:
                        channel.send(data)
                        record.sent_downstream += len(data)
                    else:
                        channel.selector.unregister(target)
                        open_ends -= 1
                        channel.shutdown_write()
                else:
                    data, ended = channel.receive()
                    if data:
                        target.sendall(data)
                        record.sent_upstream += len(data)
                    if ended:
                        client_ended()

    # HTTP ---------------------------------------------------------------------------------

    def _serve_http(self, channel: _Channel, upstream: list[socket.socket]) -> None:
        index = channel.record.index
        while True:
            try:
                head = channel.read_until(b"\r\n\r\n", _MAX_HEAD)
            except _Eof:
                if channel.buffer:
                    raise _ProtocolError(f"request cut short: {channel.buffer[:200]!r}") from None
                return
            method, target, version, headers = _parse_head(head[:-4])
            request = ProxyRequest("http", index, method=method, target=target, version=version)
            request.headers = headers
            request.body = self._read_body(channel, request)
            request.raw = channel.take()
            if method == "CONNECT":
                with contextlib.suppress(ValueError):
                    request.host, request.port = _split_authority(target)
            else:
                parts = urlsplit(target)
                if parts.hostname:
                    request.host = parts.hostname
                    with contextlib.suppress(ValueError):
                        request.port = parts.port or (443 if parts.scheme == "https" else 80)
            self._add(request)
            if self._pre_reply(channel):
                return
            connection_header = (request.get("connection") or "").lower()
            client_closes = version == "HTTP/1.0" or connection_header == "close"
            if self.mode == "status":
                keep = self.keep_alive and not client_closes
                channel.send(self._response(self.status, self.headers, self.body, keep))
                if keep:
                    continue
                channel.finish()
                return
            if self.mode != "relay":
                raise _ProtocolError(f"HTTP request in mode {self.mode!r}")
            if self.auth is not None and not self._authorized(request):
                challenge = [("Proxy-Authenticate", 'Basic realm="scripted-proxy"')]
                channel.send(self._response(407, challenge, b"", not client_closes))
                if client_closes:
                    channel.finish()
                    return
                continue
            if method == "CONNECT":
                try:
                    if not request.host:
                        raise _TargetError("not_allowed")
                    target_sock = self._open(request.host, request.port, upstream)
                except _TargetError as exc:
                    status = 403 if exc.kind == "not_allowed" else 502
                    channel.send(self._response(status, [], b"", False))
                    channel.finish()
                    return
                channel.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._tunnel(channel, target_sock, request.destination)
                return
            extra = [("Content-Type", "text/plain"), ("X-Proxy-Connection", str(index))]
            channel.send(self._response(200, extra, self.forward_body, not client_closes))
            if client_closes:
                channel.finish()
                return

    def _read_body(self, channel: _Channel, request: ProxyRequest) -> bytes:
        if (request.get("transfer-encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size_line = channel.read_until(b"\r\n", 1024)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _ProtocolError(f"bad chunk size line {size_line!r}") from None
                if size == 0:
                    while channel.read_until(b"\r\n", _MAX_HEAD) != b"\r\n":
                        pass
                    return body
                if len(body) + size > _MAX_BODY:
                    raise _ProtocolError("request body too large")
                body += channel.read_exact(size + 2)[:-2]
        length = request.get("content-length")
        if length is None:
            return b""
        if not length.isdigit() or int(length) > _MAX_BODY:
            raise _ProtocolError(f"bad Content-Length {length!r}")
        return channel.read_exact(int(length))

    def _authorized(self, request: ProxyRequest) -> bool:
        assert self.auth is not None
        scheme, _, encoded = (request.get("proxy-authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return decoded == f"{self.auth[0]}:{self.auth[1]}"

    @staticmethod
    def _response(
        status: int, headers: Sequence[tuple[str, str]], body: bytes, keep_alive: bool
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}")
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    # SOCKS5 -------------------------------------------------------------------------------

    def _serve_socks5(self, channel: _Channel, upstream: list[socket.socket]) -> None:
        _version, count = channel.read_exact(2)
        request = ProxyRequest("socks5", channel.record.index, methods=channel.read_exact(count))
        request.raw = channel.take()
        self._add(request)

        def sync() -> None:
            request.raw += channel.take()

        if self._pre_reply(channel):
            return
        methods = request.methods
        if self.mode == "socks5_no_methods":
            channel.send(b"\x05\xff")
            channel.finish()
            return
        if self.mode == "socks5_auth_rejected":
            if 0x02 not in methods:
                channel.send(b"\x05\xff")
            else:
                channel.send(b"\x05\x02")
                request.username, request.password = self._read_credentials(channel)
                sync()
                channel.send(b"\x01\x01")
            channel.finish()
            return
        if self.mode not in ("relay", "socks5_reply"):
            raise _ProtocolError(f"SOCKS5 client in mode {self.mode!r}")
        if self.auth is not None or 0x00 not in methods:
            if 0x02 not in methods:
                channel.send(b"\x05\xff")
                channel.finish()
                return
            channel.send(b"\x05\x02")
            request.username, request.password = self._read_credentials(channel)
            sync()
            if self.auth is not None and (request.username, request.password) != self.auth:
                channel.send(b"\x01\x01")
                channel.finish()
                return
            channel.send(b"\x01\x00")
        else:
            channel.send(b"\x05\x00")
        _version, command, _reserved, address_type = channel.read_exact(4)
        request.command = command
        if address_type == 0x01:
            request.address_type = "ipv4"
            request.host = socket.inet_ntop(socket.AF_INET, channel.read_exact(4))
        elif address_type == 0x04:
            request.address_type = "ipv6"
            request.host = socket.inet_ntop(socket.AF_INET6, channel.read_exact(16))
        elif address_type == 0x03:
            request.address_type = "domain"
            request.host = channel.read_exact(channel.read_exact(1)[0]).decode("latin-1")
        else:
            sync()
            raise _ProtocolError(f"unknown SOCKS5 address type {address_type}")
        (request.port,) = struct.unpack("!H", channel.read_exact(2))
        sync()
        self._notify()
        if self.mode == "socks5_reply":
            channel.send(self._socks5_reply(self.reply))
            channel.finish()
            return
        if command != 0x01:
            channel.send(self._socks5_reply(_SOCKS5_COMMAND_NOT_SUPPORTED))
            channel.finish()
            return
        try:
            target = self._open(request.host, request.port, upstream)
        except _TargetError as exc:
            code = {
                "not_allowed": _SOCKS5_NOT_ALLOWED,
                "refused": _SOCKS5_REFUSED,
                "unreachable": _SOCKS5_UNREACHABLE,
            }[exc.kind]
            channel.send(self._socks5_reply(code))
            channel.finish()
            return
        bound_host, bound_port = target.getsockname()[:2]
        channel.send(self._socks5_reply(0x00, bound_host, bound_port))
        self._tunnel(channel, target, request.destination)

    @staticmethod
    def _read_credentials(channel: _Channel) -> tuple[str, str]:
        _version, length = channel.read_exact(2)
        username = channel.read_exact(length).decode("utf-8", "replace")
        length = channel.read_exact(1)[0]
        password = channel.read_exact(length).decode("utf-8", "replace")
        return username, password

    @staticmethod
    def _socks5_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
        return (
            bytes([0x05, code, 0x00, 0x01])
            + socket.inet_pton(socket.AF_INET, host)
            + struct.pack("!H", port)
        )

    # SOCKS4 -------------------------------------------------------------------------------

    def _serve_socks4(self, channel: _Channel, upstream: list[socket.socket]) -> None:
        _version, command = channel.read_exact(2)
        (port,) = struct.unpack("!H", channel.read_exact(2))
        address = channel.read_exact(4)
        user_id = channel.read_until(b"\x00", 1024)[:-1].decode("latin-1")
        request = ProxyRequest(
            "socks4", channel.record.index, command=command, port=port, username=user_id
        )
        if address[:3] == b"\x00\x00\x00" and address[3] != 0:  # SOCKS4a: a name follows
            request.address_type = "domain"
            request.host = channel.read_until(b"\x00", 1024)[:-1].decode("latin-1")
        else:
            request.address_type = "ipv4"
            request.host = socket.inet_ntop(socket.AF_INET, address)
        request.raw = channel.take()
        self._add(request)
        if self._pre_reply(channel):
            return
        if self.mode == "socks4_reply":
            channel.send(bytes([0x00, self.reply]) + b"\x00" * 6)
            channel.finish()
            return
        if self.mode != "relay":
            raise _ProtocolError(f"SOCKS4 client in mode {self.mode!r}")
        if command != 0x01:
            channel.send(bytes([0x00, _SOCKS4_REJECTED]) + b"\x00" * 6)
            channel.finish()
            return
        try:
            target = self._open(request.host, request.port, upstream)
        except _TargetError:
            channel.send(bytes([0x00, _SOCKS4_REJECTED]) + b"\x00" * 6)
            channel.finish()
            return
        bound_host, bound_port = target.getsockname()[:2]
        channel.send(
            bytes([0x00, _SOCKS4_GRANTED])
            + struct.pack("!H", bound_port)
            + socket.inet_aton(bound_host)
        )
        self._tunnel(channel, target, request.destination)


class ProxyFactory:
    """Starts scripted proxies for one test (the `fault_proxy` fixture) and stops them all at
    the end, then reports the first internal error."""

    def __init__(self) -> None:
        self._started: list[ScriptedProxy] = []

    def __call__(self, mode: ProxyMode = "relay", **options: Any) -> ScriptedProxy:
        proxy = ScriptedProxy(mode, **options)
        proxy.start()
        self._started.append(proxy)
        return proxy

    def __iter__(self) -> Iterator[ScriptedProxy]:
        return iter(self._started)

    def stop_all(self) -> None:
        errors: list[Exception] = []
        for proxy in self._started:
            try:
                proxy.stop()
            except ProxyHandlerError as exc:
                errors.append(exc)
        self._started.clear()
        if errors:
            raise errors[0]

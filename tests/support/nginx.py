"""A real nginx on loopback ports, for tests that need a well-behaved, fast HTTP/1.1 server.

The fixture writes its own configuration into a temporary directory and runs nginx in the
foreground as a child process, so nothing on the machine (system config, default log or pid
paths, other nginx instances) is read or touched, and several instances can run side by side.

Layout of one instance (every port is picked at start):

* one plain-HTTP server per address in `addresses` (distinct origins: 127.0.0.1, .2, .3 ...);
* one more per address with keep-alive disabled (`url(..., keepalive=False)`);
* one HTTPS server on 127.0.0.1 (and on [::1] with the same port when IPv6 works), with
  HTTP/2: its ALPN offers "h2" and "http/1.1", so HTTP/1.1 clients (and clients without
  ALPN) are served HTTP/1.1 as before, and HTTP/2 clients get h2 (`http2_max_concurrent_streams`
  sets what it announces; stub_status counts h2 connections and streams like the others);
* one plain-HTTP server on [::1] when IPv6 works (`ipv6_url`);
* a status listener on 127.0.0.1 with `stub_status`, read by `server_stats()`;
* an HTTPS server requiring a client certificate signed by the bundle's client CA
  (`mtls_url`; `/client-cert` answers what nginx made of the certificate);
* two HTTPS servers with a shared session cache and session tickets, logging per request
  whether the TLS session was resumed (`resume_url`, `session_log()`); the second has
  keep-alive off, so every request is a new connection and a new handshake;
* a plain-HTTP server on a Unix domain socket in the instance's directory (`uds_path`),
  logging the Host header of every request (`uds_log()`).

Every data server answers `/` with `hello\\n` (any method, request body discarded), serves
files from `root` (`/16k`, `/1m`, optionally a sparse `/big`), and returns 404 for `/status`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import poll_until
from .certs import CertBundle, make_certs

__all__ = [
    "DEFAULT_ADDRESSES",
    "Nginx",
    "NginxError",
    "ServerStats",
    "SessionLogEntry",
    "UdsLogEntry",
    "find_nginx",
    "ipv6_loopback_available",
    "nginx_version",
    "pattern_bytes",
]

DEFAULT_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

# Files created in the document root: name -> size. Contents come from `pattern_bytes`, so a
# test can compare what it downloaded with `Nginx.file_bytes(name)`.
STATIC_FILES = {"16k": 16 * 1024, "1m": 1024 * 1024}

_STATUS_RE = re.compile(
    rb"Active connections:\s*(\d+)\s*"
    rb"server accepts handled requests\s*(\d+)\s+(\d+)\s+(\d+)\s*"
    rb"Reading:\s*(\d+)\s*Writing:\s*(\d+)\s*Waiting:\s*(\d+)"
)


class NginxError(RuntimeError):
    """nginx could not be started, or its status page could not be read."""


@dataclass(frozen=True)
class ServerStats:
    """nginx's stub_status counters, without the connections and requests of the status
    queries themselves.

    `accepted`, `handled` and `requests` are totals since nginx started; `active`, `reading`,
    `writing` and `waiting` (idle keep-alive connections) are the state right now. One nginx
    counts all its server blocks together (HTTP, HTTPS, keep-alive off, IPv6).
    """

    accepted: int
    handled: int
    requests: int
    active: int
    reading: int
    writing: int
    waiting: int

    def since(self, earlier: ServerStats) -> ServerStats:
        """Totals counted since `earlier`, with the current gauges: what a test sharing one
        nginx with other tests wants ("this test opened exactly 64 connections")."""
        return ServerStats(
            accepted=self.accepted - earlier.accepted,
            handled=self.handled - earlier.handled,
            requests=self.requests - earlier.requests,
            active=self.active,
            reading=self.reading,
            writing=self.writing,
            waiting=self.waiting,
        )


@dataclass(frozen=True)
class SessionLogEntry:
    """One request to a `resume_url` server, as nginx logged it (after the response)."""

    reused: bool  # the TLS session was resumed ($ssl_session_reused == "r")
    protocol: str  # "TLSv1.2" or "TLSv1.3"
    connection: int  # nginx's connection serial number: equal numbers, same connection
    connection_requests: int  # 1 for the first request on its connection
    remote_port: int  # the client's port
    keepalive: bool  # False: the server with keep-alive off
    uri: str  # the request target, e.g. "/?id=3"
    status: int


@dataclass(frozen=True)
class UdsLogEntry:
    """One request to the Unix-socket server, as nginx logged it (after the response)."""

    host: str  # nginx's $host: Host header without port, lowercased ("" if none was sent)
    http_host: str  # the Host header exactly as sent ("" if none)
    method: str
    uri: str
    protocol: str  # "HTTP/1.1"
    status: int


# Unix socket paths are limited to sizeof(sun_path) - 1 bytes on Linux.
_MAX_UNIX_PATH = 107

_RESUME_LOG_FORMAT = (
    '{"reused":"$ssl_session_reused","protocol":"$ssl_protocol","connection":"$connection",'
    '"connection_requests":"$connection_requests","remote_port":"$remote_port",'
    '"server_port":"$server_port","uri":"$request_uri","status":"$status"}'
)
_UDS_LOG_FORMAT = (
    '{"host":"$host","http_host":"$http_host","method":"$request_method",'
    '"uri":"$request_uri","protocol":"$server_protocol","status":"$status"}'
)


def _read_json_lines(path: Path) -> list[dict[str, str]]:
    """The complete lines of a JSON-lines log (a line still being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or in the sbin directories PATH often lacks for non-root."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


def ipv6_loopback_available() -> bool:
    """Whether [::1] can be bound here (IPv6 may be disabled in containers)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def pattern_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes: unlike a short repeating pattern, a chunk delivered
    out of order or twice cannot go unnoticed when a test compares the download."""
    return random.Random(seed).randbytes(size)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reserve_ports(groups: Sequence[Sequence[str]]) -> list[int]:
    """One free port per group of hosts, free on every host of its group.

    The probe sockets stay bound until all ports are chosen, so no port is handed out twice;
    nginx binds them a moment later, and `Nginx.start` retries if something took one meanwhile.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for hosts in groups:
            for _ in range(50):
                first = socket.socket(_family(hosts[0]), socket.SOCK_STREAM)
                first.bind((hosts[0], 0))
                port = first.getsockname()[1]
                group = [first]
                try:
                    for host in hosts[1:]:
                        other = socket.socket(_family(host), socket.SOCK_STREAM)
                        group.append(other)
                        other.bind((host, port))
                except OSError:
                    for sock in group:
                        sock.close()
                    continue
                held.extend(group)
                ports.append(port)
                break
            else:
                raise NginxError(f"no port free on all of {list(hosts)}")
    finally:
        for sock in held:
            sock.close()
    return ports


_VERSION_RE = re.compile(rb"nginx/(\d+)\.(\d+)\.(\d+)")


def nginx_version(binary: str) -> tuple[int, int, int]:
    """The version `binary -v` reports, e.g. (1, 22, 1)."""
    result = subprocess.run(
        [binary, "-v"], capture_output=True, timeout=10, check=False, stdin=subprocess.DEVNULL
    )
    match = _VERSION_RE.search(result.stderr + result.stdout)
    if match is None:
        raise NginxError(f"cannot read the version of {binary}: {result.stderr[:200]!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def _quote(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Nginx:
    """A private nginx instance; a context manager (or call `start()` / `stop()`)."""

    def __init__(
        self,
        *,
        addresses: Sequence[str] = DEFAULT_ADDRESSES,
        keepalive_timeout: float = 75.0,
        big_file_size: int | None = None,
        certs: CertBundle | None = None,
        ipv6: bool | None = None,
        extra_http_config: str = "",
        binary: str | None = None,
        start_timeout: float = 10.0,
        http2_max_concurrent_streams: int = 128,
    ) -> None:
        if not addresses:
            raise ValueError("at least one address is needed")
        self.addresses = tuple(addresses)
        self.keepalive_timeout = keepalive_timeout
        self.big_file_size = big_file_size
        self.extra_http_config = extra_http_config
        self.start_timeout = start_timeout
        self.http2_max_concurrent_streams = http2_max_concurrent_streams
        self._binary = binary
        self.version: tuple[int, int, int] | None = None
        self._given_certs = certs
        self._ipv6_wanted = ipv6
        self.ipv6 = False
        self.certs: CertBundle | None = None
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., Nginx] | None = None
        self._ports: dict[str, int] = {}
        # Connections nginx accepted on the status port for our own queries; subtracted from
        # its counters so tests see only their own traffic.
        self._status_lock = threading.Lock()
        self._status_connections = 0

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise NginxError("already started")
        binary = self._binary or find_nginx()
        if binary is None:
            raise NginxError("nginx is not installed (looked on PATH and in the sbin directories)")
        self.version = nginx_version(binary)
        self.ipv6 = ipv6_loopback_available() if self._ipv6_wanted is None else self._ipv6_wanted
        self.directory = Path(tempfile.mkdtemp(prefix="poolhttp-nginx-"))
        try:
            if len(os.fsencode(self.uds_socket_path)) > _MAX_UNIX_PATH:
                raise NginxError(
                    f"the Unix socket path {self.uds_socket_path} is too long for bind(); "
                    "set TMPDIR to a shorter directory"
                )
            self.certs = self._given_certs or make_certs(self.directory / "certs")
            self._make_root()
            # Another process can take a port between our probe and nginx's bind; a fresh set
            # of ports is then the fix, and three collisions in a row mean something else.
            for attempt in range(3):
                self._ports = self._pick_ports()
                (self.directory / "nginx.conf").write_text(self._config())
                self._launch(binary)
                try:
                    with self._status_lock:
                        self._wait_ready()
                    return
                except NginxError:
                    in_use = "Address already in use" in self.error_log()
                    self._terminate()
                    if not in_use or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop nginx, reap it and delete the temporary directory (safe to call twice)."""
        self._terminate()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _launch(self, binary: str) -> None:
        assert self.directory is not None
        # Fresh logs per attempt: a retry must not be judged by the previous attempt's errors.
        (self.directory / "error.log").write_bytes(b"")
        for name in ("session.log", "uds.log"):
            (self.directory / name).write_bytes(b"")
        # A socket file left by a failed attempt would make nginx's bind fail.
        self.uds_socket_path.unlink(missing_ok=True)
        self._stderr = open(self.directory / "stderr.log", "wb")  # noqa: SIM115 - closed in stop
        command = [
            binary,
            "-p", str(self.directory),
            "-c", str(self.directory / "nginx.conf"),
            "-e", str(self.directory / "error.log"),
        ]  # fmt: skip
        # If the test process dies without running its teardown (killed, crashed), nginx must
        # not outlive it: the kernel signals nginx when the thread that started it exits. Only
        # done from the main thread, which lives as long as the process.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            # Its own process group, so a stuck master and its worker can be killed together.
            start_new_session=True,
        )
        # Safety net for an instance that is never stopped: at garbage collection or at
        # interpreter exit, nginx is killed and its directory removed.
        self._finalizer = weakref.finalize(
            self, _emergency_cleanup, self._process, self.directory
        )

    def _terminate(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # SIGTERM: nginx's fast shutdown. It drops open connections, stops the worker and
            # exits only once the worker is gone.
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(process)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        with self._status_lock:
            self._status_connections = 0

    def _wait_ready(self) -> None:
        """Wait until the worker answers on the status port.

        nginx binds every listening socket before it starts its worker, so one successful
        status query proves all ports are served, without connecting to (and being counted
        by) the data servers.
        """
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NginxError(
                    f"nginx exited with status {self._process.returncode} at start\n"
                    f"{self._diagnostics()}"
                )
            try:
                self._query_status(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except (OSError, NginxError) as exc:
                last_error = exc
                time.sleep(0.01)
        raise NginxError(
            f"nginx did not answer within {self.start_timeout}s ({last_error!r})\n"
            f"{self._diagnostics()}"
        )

    # -- configuration -------------------------------------------------------------------

    def _pick_ports(self) -> dict[str, int]:
        names: list[str] = []
        groups: list[list[str]] = []
        for index, address in enumerate(self.addresses):
            names += [f"http{index}", f"close{index}"]
            groups += [[address], [address]]
        names += ["https", "status", "mtls", "resume", "resume_close"]
        groups += [["127.0.0.1", "::1"] if self.ipv6 else ["127.0.0.1"], ["127.0.0.1"]]
        groups += [["127.0.0.1"], ["127.0.0.1"], ["127.0.0.1"]]
        if self.ipv6:
            names.append("ipv6")
            groups.append(["::1"])
        return dict(zip(names, _reserve_ports(groups), strict=True))

    def _make_root(self) -> None:
        assert self.directory is not None
        (self.directory / "temp").mkdir()
        root = self.directory / "root"
        root.mkdir()
        for name, size in STATIC_FILES.items():
            (root / name).write_bytes(pattern_bytes(size))
        if self.big_file_size is not None:
            # Sparse: the size is set without writing, so a 1 GiB file costs no disk and no time.
            with open(root / "big", "wb") as handle:
                handle.truncate(self.big_file_size)

    def _server_block(self, listens: list[str], extra: str = "") -> str:
        assert self.directory is not None
        listen_lines = "".join(f"        listen {listen};\n" for listen in listens)
        return (
            "    server {\n"
            f"{listen_lines}"
            f"        root {_quote(self.directory / 'root')};\n"
            f"{extra}"
            '        location = / { default_type text/plain; return 200 "hello\\n"; }\n'
            "        location = /status { return 404; }\n"
            "        location / { }\n"
            "    }\n"
        )

    def _tls_lines(self, http2_directive: bool) -> str:
        assert self.certs is not None
        return (
            f"        ssl_certificate {_quote(self.certs.cert_path)};\n"
            f"        ssl_certificate_key {_quote(self.certs.key_path)};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            + ("        http2 on;\n" if http2_directive else "")
            + f"        http2_max_concurrent_streams {self.http2_max_concurrent_streams};\n"
        )

    def _extra_tls_servers(self, tls_listen: str, http2_directive: bool) -> list[str]:
        """The mutual-TLS server and the two session-resumption servers."""
        assert self.directory is not None
        assert self.certs is not None
        ports = self._ports
        tls = self._tls_lines(http2_directive)
        mtls = self._server_block(
            [f"127.0.0.1:{ports['mtls']}{tls_listen}"],
            tls
            + f"        ssl_client_certificate {_quote(self.certs.client_ca_path)};\n"
            "        ssl_verify_client on;\n"
            "        ssl_verify_depth 2;\n"
            "        location = /client-cert {\n"
            "            default_type text/plain;\n"
            '            return 200 "$ssl_client_verify\\n$ssl_client_s_dn\\n";\n'
            "        }\n",
        )
        # One ticket key for both servers (nginx would pick a random key per server block),
        # so a session from either resumes on the other; the cache zone is shared too.
        ticket_key = self.directory / "ticket.key"
        if not ticket_key.exists():
            ticket_key.write_bytes(os.urandom(80))
        resume = (
            tls
            + "        ssl_session_cache shared:poolhttp_resume:1m;\n"
            "        ssl_session_timeout 10m;\n"
            "        ssl_session_tickets on;\n"
            f"        ssl_session_ticket_key {_quote(ticket_key)};\n"
            f"        access_log {_quote(self.directory / 'session.log')} poolhttp_resume;\n"
        )
        return [
            mtls,
            self._server_block([f"127.0.0.1:{ports['resume']}{tls_listen}"], resume),
            self._server_block(
                [f"127.0.0.1:{ports['resume_close']}{tls_listen}"],
                resume + "        keepalive_timeout 0;\n",
            ),
        ]

    def _config(self) -> str:
        assert self.directory is not None
        assert self.certs is not None
        d = self.directory
        ports = self._ports
        user = ""
        if os.geteuid() == 0:
            # As root, nginx would run its worker as "nobody", which cannot read our private
            # temporary directory; the worker keeps the invoking identity instead.
            user = f"user {_identity()};\n"
        servers = []
        for index, address in enumerate(self.addresses):
            servers.append(self._server_block([f"{address}:{ports[f'http{index}']}"]))
            servers.append(
                self._server_block(
                    [f"{address}:{ports[f'close{index}']}"], "        keepalive_timeout 0;\n"
                )
            )
        # HTTP/2 on the HTTPS server: before 1.25.1 a parameter of `listen`, since then a
        # directive of its own (the parameter still works there, with a warning).
        assert self.version is not None
        http2_directive = self.version >= (1, 25, 1)
        tls_listen = " ssl" if http2_directive else " ssl http2"
        https_listens = [f"127.0.0.1:{ports['https']}{tls_listen}"]
        if self.ipv6:
            https_listens.append(f"[::1]:{ports['https']}{tls_listen}")
            servers.append(self._server_block([f"[::1]:{ports['ipv6']}"]))
        servers.append(self._server_block(https_listens, self._tls_lines(http2_directive)))
        servers += self._extra_tls_servers(tls_listen, http2_directive)
        servers.append(
            self._server_block(
                [f"unix:{self.uds_socket_path}"],
                f"        access_log {_quote(d / 'uds.log')} poolhttp_uds;\n",
            )
        )
        servers.append(
            "    server {\n"
            f"        listen 127.0.0.1:{ports['status']};\n"
            "        keepalive_timeout 0;\n"
            "        location = /status { stub_status; }\n"
            "        location / { return 404; }\n"
            "    }\n"
        )
        temp_paths = "".join(
            f"    {kind}_temp_path {_quote(d / 'temp' / kind)};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "daemon off;\n"
            "worker_processes 1;\n"
            f"{user}"
            f"pid {_quote(d / 'nginx.pid')};\n"
            f"lock_file {_quote(d / 'nginx.lock')};\n"
            f"error_log {_quote(d / 'error.log')} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp_paths}"
            "    default_type application/octet-stream;\n"
            "    sendfile on;\n"
            "    keepalive_requests 1000000;\n"
            f"    keepalive_timeout {_duration(self.keepalive_timeout)};\n"
            # Uploads of any size to `/` are accepted (and discarded), for request-body tests.
            "    client_max_body_size 0;\n"
            f"    log_format poolhttp_resume escape=json '{_RESUME_LOG_FORMAT}';\n"
            f"    log_format poolhttp_uds escape=json '{_UDS_LOG_FORMAT}';\n"
            f"{self.extra_http_config}\n"
            f"{''.join(servers)}"
            "}\n"
        )

    # -- addresses -------------------------------------------------------------------------

    def _require_started(self) -> None:
        if self._process is None:
            raise NginxError("nginx is not running")

    def port(self, index: int = 0, *, keepalive: bool = True) -> int:
        self._require_started()
        return self._ports[f"http{index}" if keepalive else f"close{index}"]

    def url(self, path: str = "/", index: int = 0, *, keepalive: bool = True) -> str:
        """`http://127.0.0.X:PORT/path` of the server on `addresses[index]`; with
        `keepalive=False`, a server that closes the connection after every response."""
        return f"http://{self.addresses[index]}:{self.port(index, keepalive=keepalive)}{path}"

    def origin(self, index: int = 0, *, keepalive: bool = True) -> str:
        return self.url("", index, keepalive=keepalive)

    @property
    def https_port(self) -> int:
        self._require_started()
        return self._ports["https"]

    def https_url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """The HTTPS server; `host` may be any of the certificate's names. "localhost" and
        "::1" work only when IPv6 is available (`self.ipv6`) or localhost resolves to IPv4."""
        return f"https://{_host_in_url(host)}:{self.https_port}{path}"

    def ipv6_url(self, path: str = "/") -> str | None:
        """`http://[::1]:PORT/path`, or None when the machine has no IPv6 loopback."""
        self._require_started()
        if not self.ipv6:
            return None
        return f"http://[::1]:{self._ports['ipv6']}{path}"

    def mtls_url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """An HTTPS server that requires a client certificate signed by the client CA
        (`certs.client_cert_path` / `client_key_path`; verify the server with `ca_path`).
        It listens on 127.0.0.1 only ("localhost" works where it resolves to 127.0.0.1).

        nginx does not fail the handshake without a certificate: it completes it and
        answers every request with 400 ("No required SSL certificate was sent"), and with
        400 ("The SSL certificate error") for a certificate the client CA did not sign.
        `/client-cert` answers `$ssl_client_verify` ("SUCCESS") and the subject DN, one per
        line. For a server that aborts the handshake instead, use a scripted server with
        `tls=certs.mtls_server_context()`.
        """
        self._require_started()
        return f"https://{_host_in_url(host)}:{self._ports['mtls']}{path}"

    @property
    def mtls_port(self) -> int:
        self._require_started()
        return self._ports["mtls"]

    def resume_port(self, *, keepalive: bool = True) -> int:
        self._require_started()
        return self._ports["resume" if keepalive else "resume_close"]

    def resume_url(
        self, path: str = "/", host: str = "127.0.0.1", *, keepalive: bool = True
    ) -> str:
        """An HTTPS server with a session cache and session tickets (TLS 1.2 and 1.3) whose
        requests are logged in `session_log()`; with `keepalive=False` nginx closes the
        connection after every response, so each request needs a new handshake. Both
        servers share the cache and the ticket key. Give each test's requests a distinct
        query (`/?t=name-1`) to find them in the shared log."""
        return f"https://{_host_in_url(host)}:{self.resume_port(keepalive=keepalive)}{path}"

    def session_log(self) -> list[SessionLogEntry]:
        """Every request the `resume_url` servers have logged so far, oldest first. nginx
        writes an entry after sending the response, so a client may see the response a
        moment before its entry appears: use `wait_for_session_log`."""
        self._require_started()
        assert self.directory is not None
        close_port = self._ports["resume_close"]
        return [
            SessionLogEntry(
                reused=fields["reused"] == "r",
                protocol=fields["protocol"],
                connection=int(fields["connection"]),
                connection_requests=int(fields["connection_requests"]),
                remote_port=int(fields["remote_port"]),
                keepalive=int(fields["server_port"]) != close_port,
                uri=fields["uri"],
                status=int(fields["status"]),
            )
            for fields in _read_json_lines(self.directory / "session.log")
        ]

    def wait_for_session_log(
        self, predicate: Callable[[list[SessionLogEntry]], bool], timeout: float = 5.0
    ) -> list[SessionLogEntry]:
        """Poll `session_log()` until `predicate` holds for it; returns the entries."""
        return poll_until(self.session_log, predicate, timeout, "session log")

    @property
    def uds_path(self) -> str:
        """The Unix domain socket of a plain-HTTP server (same content as `url()`)."""
        self._require_started()
        return str(self.uds_socket_path)

    @property
    def uds_socket_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "http.sock"

    def uds_log(self) -> list[UdsLogEntry]:
        """Every request the Unix-socket server has logged so far, oldest first (written
        after the response: use `wait_for_uds_log`)."""
        self._require_started()
        assert self.directory is not None
        return [
            UdsLogEntry(
                host=fields["host"],
                http_host=fields["http_host"],
                method=fields["method"],
                uri=fields["uri"],
                protocol=fields["protocol"],
                status=int(fields["status"]),
            )
            for fields in _read_json_lines(self.directory / "uds.log")
        ]

    def wait_for_uds_log(
        self, predicate: Callable[[list[UdsLogEntry]], bool], timeout: float = 5.0
    ) -> list[UdsLogEntry]:
        """Poll `uds_log()` until `predicate` holds for it; returns the entries."""
        return poll_until(self.uds_log, predicate, timeout, "Unix-socket log")

    @property
    def ca_path(self) -> str:
        """The CA bundle (PEM) that verifies the HTTPS server: pass it as `verify=`."""
        self._require_started()
        assert self.certs is not None
        return str(self.certs.ca_path)

    @property
    def root(self) -> Path:
        self._require_started()
        assert self.directory is not None
        return self.directory / "root"

    def file_bytes(self, name: str) -> bytes:
        """The exact content served at `/name` (for comparing downloads)."""
        return (self.root / name).read_bytes()

    def add_file(self, name: str, data: bytes) -> str:
        """Serve `data` at `/name` from now on; returns the path for `url()`."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return "/" + name

    def error_log(self) -> str:
        if self.directory is None:
            return ""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _diagnostics(self) -> str:
        assert self.directory is not None
        stderr_path = self.directory / "stderr.log"
        stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
        return f"--- nginx error log ---\n{self.error_log()[-4000:]}\n--- stderr ---\n{stderr}"

    # -- stub_status ---------------------------------------------------------------------

    def _query_status(self, timeout: float = 5.0) -> ServerStats:
        """One status query over a raw socket (never through the client under test)."""
        assert self._process is not None
        with socket.create_connection(("127.0.0.1", self._ports["status"]), timeout) as sock:
            # Counted as soon as the connection exists: nginx counts it even if the read
            # below fails.
            self._status_connections += 1
            own = self._status_connections
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            deadline = time.monotonic() + timeout
            # Read to EOF: once nginx closed this connection it no longer counts it as active,
            # so the next query needs no correction for this one.
            while len(data) < 65536:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise NginxError(f"unexpected status response: {data[:200]!r}")
        match = _STATUS_RE.search(data)
        if match is None:
            raise NginxError(f"cannot parse stub_status output: {data!r}")
        active, accepted, handled, requests, reading, writing, waiting = map(int, match.groups())
        return ServerStats(
            accepted=accepted - own,
            handled=handled - own,
            requests=requests - own,
            # The query's own connection is open and its request is being written.
            active=active - 1,
            reading=reading,
            writing=writing - 1,
            waiting=waiting,
        )

    def server_stats(self) -> ServerStats:
        """nginx's counters, as if the status queries had never been made."""
        self._require_started()
        # One query at a time: a concurrent query would be counted as a client connection.
        with self._status_lock:
            return self._query_status()

    def wait_for_stats(
        self, predicate: Callable[[ServerStats], bool], timeout: float = 5.0
    ) -> ServerStats:
        """Poll `server_stats()` until `predicate` holds (nginx notices a client's close
        asynchronously, so e.g. `active` drops a moment after the client closed)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.server_stats()
            if predicate(stats):
                return stats
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nginx stats did not reach the expected state: {stats}")
            time.sleep(0.01)


def _identity() -> str:
    """"user group" of this process, as nginx's `user` directive wants them."""
    import grp
    import pwd

    return f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"


def _emergency_cleanup(process: subprocess.Popen[bytes], directory: Path) -> None:
    _kill_group(process)
    shutil.rmtree(directory, ignore_errors=True)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a still-running nginx together with its worker, then reap it.

    The group is nginx's own (new session). It is signalled only while the master is alive:
    then the group id cannot belong to anything else, whereas after the master was reaped the
    number could be reused.
    """
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass

"""The benchmark's server: one nginx worker with its own configuration in a temporary directory.

nginx is the fixed point every client is measured against, so it is set up to stay out of the
way: one worker pinned to its own CPU, no access log, keep-alive effectively unlimited, bodies
served from the page cache with sendfile. A separate `stub_status` port lets the orchestrator
count the connections nginx accepted during each run. Two server blocks are the exceptions to
"no access log", each logging one short field per request (buffered): the HTTP/2 block its
`$server_protocol`, so that the orchestrator can count, for every run, which protocol each
request really used, and the keep-alive-off TLS block its `$ssl_session_reused`, so that it can
count how many of a run's TLS handshakes (one per request there) resumed a session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .catalog import BODY_1M, BODY_16K, POST_RESPONSE, SMALL_BODY
from .procs import parent_death_signal

ORIGIN_HOSTS = 20  # 127.0.0.1 .. 127.0.0.20 for the many-origins workload
# The HTTP/2 block's access log: one `$server_protocol` per request ("HTTP/2.0", "HTTP/1.1").
PROTOCOL_LOG = "h2-protocol.log"
# The keep-alive-off TLS block's access log: one `$ssl_session_reused` per request, and so per
# connection: "r" for a resumed TLS session (ticket or session id), "." for a full handshake.
RESUMPTION_LOG = "tls-close-resumption.log"
# How long nginx may keep access-log lines in its buffer before writing them out.
PROTOCOL_LOG_FLUSH = 0.1


def find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    text = (out.stderr or out.stdout).strip()
    return text.split("/", 1)[-1] if "/" in text else text


def _version_tuple(version: str) -> tuple[int, ...]:
    """"1.22.1" -> (1, 22, 1); anything unparsable -> () (treated as old)."""
    parts = []
    for part in version.split(" ", 1)[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def http2_directives(version: str) -> tuple[str, str]:
    """(listen parameters, server-level directive) that turn HTTP/2 on for a TLS listener.

    nginx 1.25.1 deprecated `listen ... http2` (it warns) for a separate `http2 on;`; earlier
    releases (Debian 12 has 1.22) know only the listen parameter.
    """
    if _version_tuple(version) >= (1, 25, 1):
        return "ssl", "http2 on;"
    return "ssl http2", ""


@dataclass
class Ports:
    plain: int
    close: int
    tls: int
    tls_close: int
    h2: int
    status: int


def _free_port(hosts: int = 1) -> int:
    """A port that is free on 127.0.0.1 .. 127.0.0.<hosts> right now (nginx binds it next)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        try:
            for i in range(2, hosts + 1):
                with socket.socket() as other:
                    other.bind((f"127.0.0.{i}", port))
        except OSError:
            continue
        return port
    raise RuntimeError("could not find a free loopback port")


def _pick_ports() -> Ports:
    chosen: set[int] = set()

    def pick(hosts: int = 1) -> int:
        for _ in range(20):
            port = _free_port(hosts)
            if port not in chosen:
                chosen.add(port)
                return port
        raise RuntimeError("could not find distinct free loopback ports")

    return Ports(plain=pick(ORIGIN_HOSTS), close=pick(), tls=pick(), tls_close=pick(), h2=pick(),
                 status=pick())


def make_tls_files(directory: Path) -> Path:
    """Write a throw-away CA and a server certificate for 127.0.0.1; return the CA file."""
    import trustme  # imported here: only the orchestrator needs it, workers never do

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(directory / "server.pem"), append=True)
    return ca_file


def _config(root: Path, ports: Ports, version: str) -> str:
    www = root / "www"
    small = SMALL_BODY.decode().replace("\n", "\\n")
    post = POST_RESPONSE.decode().replace("\n", "\\n")
    # Locations shared by the plain, keep-alive-off and TLS server blocks. `return` answers
    # without touching the disk; for /post nginx reads the request body off the socket (it has
    # to, to keep the connection usable) and discards it.
    locations = f"""
        location = /small {{ default_type text/plain; return 200 "{small}"; }}
        location = /post {{ default_type application/json; return 200 '{post}'; }}
        location / {{ root {www}; }}
    """
    origin_listens = "\n".join(f"        listen 127.0.0.{i}:{ports.plain};"
                               for i in range(2, ORIGIN_HOSTS + 1))
    temp = root / "temp"
    h2_listen, h2_on = http2_directives(version)
    flush_ms = round(PROTOCOL_LOG_FLUSH * 1000)
    return f"""
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
worker_rlimit_nofile 65536;

events {{
    worker_connections 16384;
    multi_accept on;
}}

http {{
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # Keep-alive limits far above any run's request count, so the server never closes a
    # connection a client meant to reuse (the counts of new connections show it).
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    open_file_cache max=16 inactive=300s;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    server {{
        listen 127.0.0.1:{ports.plain} backlog=4096;
{origin_listens}
        {locations}
    }}

    server {{
        listen 127.0.0.1:{ports.close} backlog=4096;
        keepalive_timeout 0;
        {locations}
    }}

    server {{
        listen 127.0.0.1:{ports.tls} ssl backlog=4096;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        {locations}
    }}

    # TLS with keep-alive off (nginx answers `Connection: close`): a new connection, and a TLS
    # handshake, per request. A session cache and session tickets (the ticket key lives as long
    # as this one worker) make resumption possible for a client that offers a session; each
    # request's $ssl_session_reused ("r" or ".") goes to a buffered log, which the orchestrator
    # counts after each run (Nginx.resumption).
    log_format resumption '$ssl_session_reused';
    server {{
        listen 127.0.0.1:{ports.tls_close} ssl backlog=4096;
        keepalive_timeout 0;
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        access_log {root}/{RESUMPTION_LOG} resumption buffer=64k flush={flush_ms}ms;
        {locations}
    }}

    # HTTP/2 over TLS (ALPN h2, with http/1.1 for the clients that offer only that), same
    # certificate and locations as the TLS block. keepalive_requests and keepalive_timeout
    # above apply to HTTP/2 connections too (they replaced http2_max_requests, whose default
    # of 1000 would otherwise close each connection with a GOAWAY). http2_max_concurrent_streams
    # stays at its default, 128: a client with more requests in flight than that has to open a
    # second connection or queue, which is part of what h2-c256 measures.
    log_format protocol '$server_protocol';
    server {{
        listen 127.0.0.1:{ports.h2} {h2_listen} backlog=4096;
        {h2_on}
        ssl_certificate {root}/server.pem;
        ssl_certificate_key {root}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        # One short line per request, written out at least every {PROTOCOL_LOG_FLUSH:g} s: the
        # orchestrator counts the protocols after each run (Nginx.protocols).
        access_log {root}/{PROTOCOL_LOG} protocol buffer=64k flush={flush_ms}ms;
        {locations}
    }}

    server {{
        listen 127.0.0.1:{ports.status};
        location = /status {{ stub_status; }}
    }}
}}
"""


class Nginx:
    """Start nginx in `root` (a temporary directory) and stop it again; use as a context manager.

    `cpu` pins it with `taskset -c` when given. The process runs in its own session so a Ctrl-C
    at the terminal reaches only the orchestrator, which then stops it in order; if the
    orchestrator dies without doing so, the kernel sends nginx a SIGTERM.
    """

    def __init__(self, root: Path, cpu: int | None) -> None:
        self.root = root
        self.cpu = cpu
        self.binary = find_nginx()
        if self.binary is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light; "
                               "`python3 dev.py bench` installs it)")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports = Ports(0, 0, 0, 0, 0, 0)
        self.ca_file = root / "ca.pem"
        self.version = nginx_version(self.binary)
        self.protocol_log = root / PROTOCOL_LOG
        self.resumption_log = root / RESUMPTION_LOG

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Nginx:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        root = self.root
        # The nginx worker may run as an unprivileged user: it must be able to read the files.
        root.chmod(0o755)
        (root / "www").mkdir(exist_ok=True)
        (root / "temp").mkdir(exist_ok=True)
        (root / "www" / "16k.bin").write_bytes(os.urandom(BODY_16K))
        (root / "www" / "1m.bin").write_bytes(os.urandom(BODY_1M))
        self.ca_file = make_tls_files(root)
        for path in (root / "www").iterdir():
            path.chmod(0o644)
        last_error = ""
        for _attempt in range(3):  # another process may grab a port between probe and bind
            self.ports = _pick_ports()
            conf = root / "nginx.conf"
            conf.write_text(_config(root, self.ports, self.version))
            assert self.binary is not None
            cmd = [self.binary, "-p", str(root), "-c", str(conf)]
            if self.cpu is not None and shutil.which("taskset"):
                cmd = ["taskset", "-c", str(self.cpu), *cmd]
            log = open(root / "nginx.out", "wb")  # noqa: SIM115 - closed below, after exit
            try:
                # SIGTERM if the orchestrator dies: nginx's master then stops its worker.
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=parent_death_signal(signal.SIGTERM))
            finally:
                log.close()
            if self._wait_ready(10.0):
                return
            last_error = self._log_tail()
            self.stop()
        raise RuntimeError(f"nginx did not start:\n{last_error}")

    def _wait_ready(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                self.accepted()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop nginx: SIGTERM (fast shutdown: the master stops its worker), then SIGKILL."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
            if proc.poll() is not None:
                break
            try:
                # Its own process group (start_new_session): this reaches the master and the
                # worker it forked, and nothing else.
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        # The master is gone; make sure its worker is too before the directory is removed.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=5.0)

    # -- facts for the workers -----------------------------------------------------------
    def base_url(self, server: str, host: int = 1) -> str:
        if server == "tls":
            return f"https://127.0.0.1:{self.ports.tls}"
        if server == "tls-close":
            return f"https://127.0.0.1:{self.ports.tls_close}"
        if server == "h2":
            return f"https://127.0.0.1:{self.ports.h2}"
        if server == "close":
            return f"http://127.0.0.1:{self.ports.close}"
        return f"http://127.0.0.{host}:{self.ports.plain}"

    def protocol_log_size(self) -> int:
        """Where the HTTP/2 block's access log ends now (nginx creates it at start)."""
        return _log_size(self.protocol_log)

    def protocols(self, offset: int, expect: int | None, wait: float = 3.0) -> dict[str, int]:
        """Requests per protocol the HTTP/2 block logged since `offset` (a protocol_log_size).

        nginx writes the log out in buffered batches, at the latest PROTOCOL_LOG_FLUSH after a
        line is logged, and logs an HTTP/2 request when its stream closes, which can be a
        moment after the client has its response: this waits, up to `wait` seconds, until at
        least `expect` lines are there. With `expect` None (a run that failed, so no count to
        wait for) it waits two flush intervals, so that no line of this run is left to be
        counted for the next one.
        """
        return _count_lines(self.protocol_log, offset, expect, wait)

    def resumption_log_size(self) -> int:
        """Where the keep-alive-off TLS block's access log ends now."""
        return _log_size(self.resumption_log)

    def resumption(self, offset: int, expect: int | None, wait: float = 3.0) -> dict[str, int]:
        """The keep-alive-off TLS block's requests since `offset` (a resumption_log_size) by
        `$ssl_session_reused`: {"r": resumed handshakes, ".": full ones}. One request per
        connection there, so these are the run's TLS handshakes. Waits as `protocols` does."""
        return _count_lines(self.resumption_log, offset, expect, wait)

    def accepted(self) -> int:
        """nginx's count of accepted connections so far (this query's own one included)."""
        with socket.create_connection(("127.0.0.1", self.ports.status), timeout=5.0) as sock:
            sock.sendall(b"GET /status HTTP/1.0\r\nHost: status\r\n\r\n")
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
        text = b"".join(chunks).decode("latin-1")
        # "...\nServer accepts handled requests\n 12 12 34 \n..."
        lines = text.split("\r\n\r\n", 1)[-1].splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("server accepts"):
                return int(lines[i + 1].split()[0])
        raise OSError(f"unexpected stub_status answer: {text[:200]!r}")


def _log_size(path: Path) -> int:
    """Where an access log ends now (nginx creates it at start)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count_lines(path: Path, offset: int, expect: int | None, wait: float) -> dict[str, int]:
    """Lines (one word each) of an access log since `offset`, counted by their text.

    nginx writes its buffered logs out at the latest PROTOCOL_LOG_FLUSH after a line is logged:
    this waits, up to `wait` seconds, until at least `expect` lines are there; with `expect`
    None it waits two flush intervals, so that no line of this run is counted for the next.
    """
    if expect is None:
        time.sleep(2 * PROTOCOL_LOG_FLUSH)
        expect = 0
    deadline = time.monotonic() + wait
    counts: dict[str, int] = {}
    while True:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        # Only whole lines: a batch may be caught half-written.
        words = data[:data.rfind(b"\n") + 1].decode("latin-1").split()
        counts = {}
        for word in words:
            counts[word] = counts.get(word, 0) + 1
        if sum(counts.values()) >= expect or time.monotonic() >= deadline:
            break
        time.sleep(PROTOCOL_LOG_FLUSH / 2)
    return counts

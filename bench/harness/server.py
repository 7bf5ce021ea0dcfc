"""The benchmark's server: one nginx worker with its own configuration in a temporary directory.

nginx is the fixed point every client is measured against, so it is set up to stay out of the
way: one worker pinned to its own CPU, no access log, keep-alive effectively unlimited, bodies
served from the page cache with sendfile. A separate `stub_status` port lets the orchestrator
count the connections nginx accepted during each run.
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


def find_nginx() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def nginx_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    text = (out.stderr or out.stdout).strip()
    return text.split("/", 1)[-1] if "/" in text else text


@dataclass
class Ports:
    plain: int
    close: int
    tls: int
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

    return Ports(plain=pick(ORIGIN_HOSTS), close=pick(), tls=pick(), status=pick())


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


def _config(root: Path, ports: Ports) -> str:
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
        self.ports = Ports(0, 0, 0, 0)
        self.ca_file = root / "ca.pem"

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
            conf.write_text(_config(root, self.ports))
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
        if server == "close":
            return f"http://127.0.0.1:{self.ports.close}"
        return f"http://127.0.0.{host}:{self.ports.plain}"

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

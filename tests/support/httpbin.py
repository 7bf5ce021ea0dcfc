"""httpbin (the Flask app from PyPI) served by gunicorn on loopback, over HTTP and HTTPS.

Two gunicorn masters run side by side, one plain and one with TLS (gunicorn's TLS setting
applies to every listener of a master), each with `workers` sync workers, so a handful of
requests are served concurrently. Every gunicorn runs in a temporary directory, in its own
session (process group), with its own configuration file: nothing on the machine is read or
written besides that directory.

Ports: the listening sockets are bound and put in listen mode here, on 127.0.0.1 port 0, and
handed to gunicorn as `fd://N`. The port is known before gunicorn starts and no other process
can take it in between, so there is no retry loop. Ready means one request answered `/get`.

Stopping: SIGINT (gunicorn's quick shutdown: the master stops and reaps its workers, then
exits), and SIGKILL to the whole group if the master is still there after a few seconds. The
group is signalled only before the master is reaped, so its id cannot belong to anything else.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO

from . import listening_socket
from .certs import CertBundle, make_certs

__all__ = ["Httpbin", "HttpbinError"]

HOST = "127.0.0.1"


class HttpbinError(RuntimeError):
    """gunicorn could not be started, or did not answer in time."""


def _config(fd: int, workers: int, directory: Path, certs: CertBundle | None) -> str:
    lines = [
        f"bind = ['fd://{fd}']",
        f"workers = {workers}",
        "worker_class = 'sync'",
        # The app is imported once, in the master, before the workers fork: start-up costs
        # one import of Flask, not one per worker.
        "preload_app = True",
        "timeout = 60",
        "graceful_timeout = 2",
        "loglevel = 'warning'",
        "accesslog = None",
        f"errorlog = {str(directory / 'error.log')!r}",
        f"worker_tmp_dir = {str(directory)!r}",
        f"pidfile = {str(directory / 'gunicorn.pid')!r}",
        # Newer gunicorn opens a control socket under $HOME by default; older versions ignore
        # unknown names in a configuration file.
        "control_socket_disable = True",
    ]
    if certs is not None:
        lines += [f"certfile = {str(certs.cert_path)!r}", f"keyfile = {str(certs.key_path)!r}"]
    return "\n".join(lines) + "\n"


class _Gunicorn:
    """One gunicorn master (and its workers) serving httpbin on one listening socket."""

    def __init__(self, directory: Path, workers: int, certs: CertBundle | None) -> None:
        self.directory = directory
        self._ca_path = None if certs is None else str(certs.ca_path)
        directory.mkdir()
        sock = listening_socket(HOST)
        self.port: int = sock.getsockname()[1]
        try:
            self._launch(sock, workers, certs)
        finally:
            sock.close()  # gunicorn holds its own copy now

    def _launch(self, sock: socket.socket, workers: int, certs: CertBundle | None) -> None:
        config = self.directory / "gunicorn.conf.py"
        config.write_text(_config(sock.fileno(), workers, self.directory, certs))
        command = [sys.executable, "-m", "gunicorn", "-c", str(config), "httpbin:app"]
        # As in nginx.py: if the test process dies without its teardown, the kernel sends the
        # master SIGTERM (gunicorn's graceful stop) when the thread that started it exits.
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        self._stderr: IO[bytes] | None = open(  # noqa: SIM115 - closed in terminate()
            self.directory / "stderr.log", "wb")
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            pass_fds=(sock.fileno(),),
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _stop_process, self.process)

    def request(self, path: str, timeout: float) -> int:
        """The status of one GET over a fresh connection (never through the client under
        test); raises OSError while gunicorn is not serving yet."""
        connection: http.client.HTTPConnection
        if self._ca_path is not None:
            context = ssl.create_default_context(cafile=self._ca_path)
            connection = http.client.HTTPSConnection(
                HOST, self.port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def wait_ready(self, deadline: float) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise HttpbinError(
                    f"gunicorn exited with status {self.process.returncode} at start\n"
                    f"{self.diagnostics()}")
            try:
                status = self.request("/get", timeout=max(0.1, deadline - time.monotonic()))
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
                time.sleep(0.02)
                continue
            if status == 200:
                return
            raise HttpbinError(f"httpbin answered /get with {status}\n{self.diagnostics()}")
        raise HttpbinError(f"gunicorn did not answer in time ({last_error!r})\n"
                           f"{self.diagnostics()}")

    def group_pids(self) -> list[int]:
        """The pids in the master's process group now (master and workers)."""
        if self.process is None:
            return []
        return _pids_in_group(self.process.pid)

    def interrupt(self) -> None:
        """Ask for gunicorn's quick shutdown without waiting (`terminate()` waits)."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._finalizer.detach()
        process, self.process = self.process, None
        if process is not None:
            _stop_process(process)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def diagnostics(self) -> str:
        parts = []
        for name in ("error.log", "stderr.log"):
            path = self.directory / name
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ---\n{text[-4000:]}")
        return "\n".join(parts)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """Quick shutdown, then SIGKILL to the group if needed; reaps the master."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        if not _exited_unreaped(process.pid, timeout=5.0):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for `pid` to exit, without reaping it (its pid, and so its group
    id, stays reserved until `wait()`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped
        if info is not None:
            return True
        time.sleep(0.01)
    return False


def _pids_in_group(pgid: int) -> list[int]:
    """Living (non-zombie) processes whose process group is `pgid`, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


class Httpbin:
    """httpbin over HTTP and HTTPS on 127.0.0.1; a context manager (or `start()`/`stop()`).

    `url(path)` and `https_url(path)` address the two servers; `ca_path` verifies HTTPS.
    """

    def __init__(self, *, certs: CertBundle | None = None, workers: int = 4,
                 start_timeout: float = 20.0) -> None:
        if workers < 1:
            raise ValueError("at least one worker is needed")
        self.workers = workers
        self.start_timeout = start_timeout
        self._given_certs = certs
        self.certs: CertBundle | None = None
        self.directory: Path | None = None
        self._http: _Gunicorn | None = None
        self._https: _Gunicorn | None = None

    def __enter__(self) -> Httpbin:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.directory is not None:
            raise HttpbinError("already started")
        self.directory = Path(tempfile.mkdtemp(prefix="poolhttp-httpbin-"))
        try:
            self.certs = self._given_certs or make_certs(self.directory / "certs")
            # Both masters boot at once; then each is waited for.
            self._http = _Gunicorn(self.directory / "http", self.workers, None)
            self._https = _Gunicorn(self.directory / "https", self.workers, self.certs)
            deadline = time.monotonic() + self.start_timeout
            self._http.wait_ready(deadline)
            self._https.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both gunicorns, reap them and delete the directory (safe to call twice)."""
        servers = [server for server in (self._http, self._https) if server is not None]
        for server in servers:  # both shut down at once
            server.interrupt()
        for server in servers:
            server.terminate()
        self._http = self._https = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _server(self, tls: bool) -> _Gunicorn:
        server = self._https if tls else self._http
        if server is None:
            raise HttpbinError("httpbin is not running")
        return server

    @property
    def port(self) -> int:
        return self._server(False).port

    @property
    def https_port(self) -> int:
        return self._server(True).port

    def url(self, path: str = "/") -> str:
        """`http://127.0.0.1:PORT/path` (path includes any query string)."""
        return f"http://{HOST}:{self.port}{path}"

    def https_url(self, path: str = "/") -> str:
        """`https://127.0.0.1:PORT/path`, verified by `ca_path`."""
        return f"https://{HOST}:{self.https_port}{path}"

    @property
    def ca_path(self) -> str:
        """The CA bundle (PEM) that verifies the HTTPS server: pass it as `verify=`."""
        self._server(True)
        assert self.certs is not None
        return str(self.certs.ca_path)

    def pids(self) -> list[int]:
        """Every living process of both servers (masters and workers), for leak checks."""
        return [pid for server in (self._http, self._https) if server is not None
                for pid in server.group_pids()]

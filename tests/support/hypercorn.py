"""hypercorn, a second real HTTP/2 server, serving `asgi_app.py` on two loopback ports.

One hypercorn process (`python -m hypercorn` from this interpreter) listens on:

* a TLS port whose ALPN offers "h2" and "http/1.1" (certificate from `certs.make_certs`, or
  the bundle given), for HTTP/2 negotiated the usual way;
* a plain port that speaks HTTP/1.1, and HTTP/2 to a client that starts with the connection
  preface (h2c with prior knowledge).

The app's `/echo` answers `http_version` ("2" or "1.1"), so a test can check which protocol
the client really used; `/bytes/N` and `/delay/MS` serve bodies and slow answers (see
`asgi_app`).

Ports: both listening sockets are bound on 127.0.0.1 port 0 here and handed to hypercorn as
`fd://N`, so their ports are known before it starts and no other process can take them.
Ready means both ports answered a request (HTTP/1.1 over a raw socket, never through the
client under test). Stopping: SIGTERM (hypercorn's graceful stop, at most
`graceful_timeout`), then SIGKILL to the process group; the child is always reaped, and it
gets SIGTERM from the kernel if the test process dies without its teardown.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from . import listening_socket
from .certs import CertBundle, make_certs

__all__ = ["Hypercorn", "HypercornError", "hypercorn_fixture"]

HOST = "127.0.0.1"
# The directory that holds the `tests` package: hypercorn imports `tests.support.asgi_app`.
# (Not tests/support itself on the path: this module's name would hide hypercorn's own.)
_IMPORT_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.support.asgi_app:app"


class HypercornError(RuntimeError):
    """hypercorn could not be started, or did not answer in time."""


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Hypercorn:
    """hypercorn on a TLS port and an h2c port; a context manager (or `start()`/`stop()`).

    `url_tls(path)` (verify with `ca_path`) and `url_h2c(path)` address the two ports.
    `h2_max_concurrent_streams` is the SETTINGS_MAX_CONCURRENT_STREAMS hypercorn announces.
    """

    def __init__(
        self,
        *,
        certs: CertBundle | None = None,
        h2_max_concurrent_streams: int = 100,
        graceful_timeout: float = 1.0,
        start_timeout: float = 20.0,
    ) -> None:
        self.h2_max_concurrent_streams = h2_max_concurrent_streams
        self.graceful_timeout = graceful_timeout
        self.start_timeout = start_timeout
        self._given_certs = certs
        self.certs: CertBundle | None = None
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., Hypercorn] | None = None
        self._tls_port = 0
        self._h2c_port = 0

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Hypercorn:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.directory is not None:
            raise HypercornError("already started")
        self.directory = Path(tempfile.mkdtemp(prefix="poolhttp-hypercorn-"))
        try:
            self.certs = self._given_certs or make_certs(self.directory / "certs")
            tls_socket, h2c_socket = listening_socket(HOST), listening_socket(HOST)
            try:
                self._tls_port = tls_socket.getsockname()[1]
                self._h2c_port = h2c_socket.getsockname()[1]
                self._launch(tls_socket.fileno(), h2c_socket.fileno())
            finally:
                tls_socket.close()  # hypercorn holds its own copies now
                h2c_socket.close()
            self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def _config(self, tls_fd: int, h2c_fd: int) -> str:
        assert self.directory is not None
        assert self.certs is not None
        lines = [
            f"bind = [{_toml_string(f'fd://{tls_fd}')}]",
            f"insecure_bind = [{_toml_string(f'fd://{h2c_fd}')}]",
            f"certfile = {_toml_string(str(self.certs.cert_path))}",
            f"keyfile = {_toml_string(str(self.certs.key_path))}",
            'alpn_protocols = ["h2", "http/1.1"]',
            f"h2_max_concurrent_streams = {self.h2_max_concurrent_streams}",
            f"graceful_timeout = {float(self.graceful_timeout)}",
            "workers = 1",
            'loglevel = "WARNING"',
            f"errorlog = {_toml_string(str(self.directory / 'error.log'))}",
        ]
        return "\n".join(lines) + "\n"

    def _launch(self, tls_fd: int, h2c_fd: int) -> None:
        assert self.directory is not None
        config = self.directory / "hypercorn.toml"
        config.write_text(self._config(tls_fd, h2c_fd))
        command = [sys.executable, "-m", "hypercorn", "--config", str(config), APP]
        # As in nginx.py: if the test process dies without its teardown, the kernel sends
        # hypercorn SIGTERM when the thread that started it exits (main thread only).
        setpriv = shutil.which("setpriv")
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(_IMPORT_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        self._stderr = open(self.directory / "stderr.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            pass_fds=(tls_fd, h2c_fd),
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _stop_process, self.process, 0.0)

    def _request(self, tls: bool, timeout: float) -> int:
        """The status of one HTTP/1.1 GET /echo; raises OSError while not serving yet."""
        connection: http.client.HTTPConnection
        if tls:
            assert self.certs is not None
            context = ssl.create_default_context(cafile=str(self.certs.ca_path))
            context.set_alpn_protocols(["http/1.1"])
            connection = http.client.HTTPSConnection(
                HOST, self._tls_port, timeout=timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(HOST, self._h2c_port, timeout=timeout)
        try:
            connection.request("GET", "/echo")
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def _wait_ready(self, deadline: float) -> None:
        last_error: Exception | None = None
        for tls in (False, True):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise HypercornError(
                        f"hypercorn exited with status {self.process.returncode} at start\n"
                        f"{self.diagnostics()}"
                    )
                if time.monotonic() >= deadline:
                    raise HypercornError(
                        f"hypercorn did not answer in time ({last_error!r})\n{self.diagnostics()}"
                    )
                try:
                    status = self._request(tls, timeout=max(0.1, deadline - time.monotonic()))
                except (OSError, http.client.HTTPException) as exc:
                    last_error = exc
                    time.sleep(0.02)
                    continue
                if status != 200:
                    raise HypercornError(
                        f"hypercorn answered /echo with {status}\n{self.diagnostics()}"
                    )
                break

    def stop(self) -> None:
        """SIGTERM, SIGKILL to the group if needed, reap; delete the directory (safe to
        call twice)."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        process, self.process = self.process, None
        if process is not None:
            _stop_process(process, self.graceful_timeout + 4.0)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def diagnostics(self) -> str:
        """The end of hypercorn's logs (for failure messages)."""
        if self.directory is None:
            return ""
        parts = []
        for name in ("error.log", "stderr.log"):
            path = self.directory / name
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} ---\n{text[-4000:]}")
        return "\n".join(parts)

    # -- addresses -----------------------------------------------------------------------

    def _require_started(self) -> None:
        if self.process is None:
            raise HypercornError("hypercorn is not running")

    @property
    def tls_port(self) -> int:
        self._require_started()
        return self._tls_port

    @property
    def h2c_port(self) -> int:
        self._require_started()
        return self._h2c_port

    def url_tls(self, path: str = "/") -> str:
        """`https://127.0.0.1:PORT/path` (ALPN: h2, http/1.1), verified by `ca_path`."""
        return f"https://{HOST}:{self.tls_port}{path}"

    def url_h2c(self, path: str = "/") -> str:
        """`http://127.0.0.1:PORT/path`: HTTP/1.1, or h2c with prior knowledge."""
        return f"http://{HOST}:{self.h2c_port}{path}"

    @property
    def ca_path(self) -> str:
        """The CA bundle (PEM) that verifies the TLS port: pass it as `verify=`."""
        self._require_started()
        assert self.certs is not None
        return str(self.certs.ca_path)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def _stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL to the group after `grace` seconds; reaps the process. The group
    is signalled only while the process is unreaped, so its id cannot be someone else's."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def hypercorn_fixture(*, name: str = "hypercorn", scope: str = "session", **options: Any) -> Any:
    """A pytest fixture running one `Hypercorn` (with the session's `certs` fixture) for the
    whole `scope`. In conftest.py: `hypercorn = hypercorn_fixture()`; tests then take a
    `hypercorn` argument. `options` go to `Hypercorn(...)`."""

    def fixture(certs: CertBundle) -> Iterator[Hypercorn]:
        with Hypercorn(certs=certs, **options) as server:
            yield server

    fixture.__doc__ = (
        "hypercorn serving tests/support/asgi_app.py: `url_tls(path)` (h2 via ALPN, verify "
        "with `ca_path`) and `url_h2c(path)` (h2c with prior knowledge, or HTTP/1.1)."
    )
    return pytest.fixture(scope=scope, name=name)(fixture)  # type: ignore[call-overload]

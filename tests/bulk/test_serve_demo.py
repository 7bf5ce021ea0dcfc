"""`poolhttp serve-demo` as a child process: the printed origins answer the real client as
documented, signals and (when asked) the end of standard input stop it cleanly, a port in use
is a message and exit status 2, and nothing keeps listening once it has gone."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import poolhttp

from .helpers import cli_env, run_cli

START_TIMEOUT = 20.0


def second_loopback_is_local() -> bool:
    """Linux routes all of 127/8 to loopback; some systems only configure 127.0.0.1."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def read_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    assert ready, f"no output within {START_TIMEOUT} s (exit status {proc.poll()})"
    return proc.stdout.readline().decode()


def human_origins(proc: subprocess.Popen[bytes]) -> tuple[str, list[str]]:
    """The header line and the origins, one per indented line after it."""
    assert proc.stdout is not None
    header = read_line(proc)
    origins = []
    while (line := proc.stdout.readline().decode()).startswith("  http://"):
        origins.append(line.strip())
    return header, origins


@contextmanager
def serve_demo(*flags: str, stdin: Any = subprocess.DEVNULL
               ) -> Iterator[subprocess.Popen[bytes]]:
    """The server in a child process; killed at the end if the test did not stop it."""
    proc = subprocess.Popen([sys.executable, "-m", "poolhttp", "serve-demo", *flags],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> tuple[int, str]:
    assert proc.stderr is not None
    status = proc.wait(timeout=timeout)
    return status, proc.stderr.read().decode()


def assert_nothing_listens(pid: int, origins: list[str]) -> None:
    assert not Path(f"/proc/{pid}").exists(), "the server process is still there"
    for origin in origins:
        host, _, port = origin.removeprefix("http://").rpartition(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5).close()


def test_origins_answer_the_documented_query_parameters() -> None:
    with serve_demo("--hosts", "2") as proc:
        header, origins = human_origins(proc)
        assert "serving 2 demo origins until Ctrl-C" in header
        assert len(set(origins)) == 2
        assert origins[0].startswith("http://127.0.0.1:")
        if second_loopback_is_local():
            assert origins[1].startswith("http://127.0.0.2:")
        with poolhttp.Client() as client:
            for origin in origins:
                plain = client.get(f"{origin}/any/path?x=1")
                assert (plain.status_code, plain.text) == (200, "GET /any/path?x=1\n")
            base = origins[0]
            assert client.get(f"{base}/x?status=404").status_code == 404
            empty = client.get(f"{base}/x?status=204")
            assert (empty.status_code, empty.content) == (204, b"")
            assert len(client.get(f"{base}/x?size=1000").content) == 1000
            started = time.monotonic()
            assert client.get(f"{base}/x?delay=0.3").status_code == 200
            assert time.monotonic() - started >= 0.3
            # On a new connection (a reused one that is dropped is resent once, as stale).
            with poolhttp.Client() as fresh, pytest.raises(poolhttp.ServerDisconnected):
                fresh.get(f"{base}/x?close=1")
            echo = client.post(f"{base}/echo?k=v", content=b"12345", headers={"X-Probe": "yes"})
            described = echo.json()
            assert (described["method"], described["target"], described["body_size"]) == (
                "POST", "/echo?k=v", 5)
            assert described["headers"]["x-probe"] == "yes"
            head = client.head(f"{base}/x?size=50")
            assert (head.content, head.headers["content-length"]) == (b"", "50")
        proc.send_signal(signal.SIGTERM)
        status, stderr = wait_exit(proc)
    assert status == 0
    assert stderr == ""
    assert_nothing_listens(proc.pid, origins)


def test_ctrl_c_stops_it_cleanly_and_closed_stdin_does_not() -> None:
    # Standard input is /dev/null: without --until-stdin-eof that must not stop the server
    # (started in the background, or by a service manager, it has no input at all).
    with serve_demo("--hosts", "1") as proc:
        _, origins = human_origins(proc)
        time.sleep(0.3)
        assert proc.poll() is None
        with poolhttp.Client() as client:
            assert client.get(f"{origins[0]}/still-there").status_code == 200
        proc.send_signal(signal.SIGINT)
        status, stderr = wait_exit(proc)
    assert status == 0
    assert "Traceback" not in stderr
    assert "interrupted" not in stderr
    assert_nothing_listens(proc.pid, origins)


def test_json_line_and_until_stdin_eof_for_a_parent_process() -> None:
    with serve_demo("--hosts", "3", "--json", "--until-stdin-eof",
                    stdin=subprocess.PIPE) as proc:
        origins = json.loads(read_line(proc))["origins"]
        assert len(set(origins)) == 3
        with poolhttp.Client() as client:
            assert [client.get(f"{o}/x").status_code for o in origins] == [200, 200, 200]
        assert proc.poll() is None
        assert proc.stdin is not None
        proc.stdin.close()  # the parent went away
        status, stderr = wait_exit(proc)
    assert (status, stderr) == (0, "")
    assert_nothing_listens(proc.pid, origins)


def test_a_given_port_is_used_for_every_origin() -> None:
    port = free_port()
    with serve_demo("--port", str(port), "--hosts", "2", "--json") as proc:
        origins = json.loads(read_line(proc))["origins"]
        second = ("127.0.0.2", port) if second_loopback_is_local() else ("127.0.0.1", port + 1)
        assert origins == [f"http://127.0.0.1:{port}", f"http://{second[0]}:{second[1]}"]
        with poolhttp.Client() as client:
            assert client.get(f"{origins[1]}/x?status=503").status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc)[0] == 0
    assert_nothing_listens(proc.pid, origins)


@pytest.mark.parametrize("busy", ["127.0.0.1", "127.0.0.2"])
def test_a_port_in_use_is_a_message_and_exit_2(busy: str) -> None:
    if busy != "127.0.0.1" and not second_loopback_is_local():
        pytest.skip("only 127.0.0.1 is local here")
    with socket.socket() as listener:
        listener.bind((busy, 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = run_cli(["serve-demo", "--port", str(port), "--hosts", "2"], timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""  # no origins announced
    assert f"poolhttp serve-demo: cannot listen on {busy}:{port}: the port is in use" in \
        done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--port", "70000"], "--port 70000: must be at most 65535"),
    (["--port", "-1"], "--port: must be at least 0"),
    (["--port", "http"], "--port: expected a whole number"),
    (["--hosts", "0"], "--hosts: must be at least 1"),
    (["--hosts", "251"], "--hosts 251: at most 250"),
])
def test_bad_flags_are_refused(flags: list[str], message: str) -> None:
    done = run_cli(["serve-demo", *flags], timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_help_documents_the_query_parameters() -> None:
    done = run_cli(["serve-demo", "--help"], timeout=30)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for documented in ("?status=N", "?delay=S", "?size=N", "?close=1", "/echo", "--port",
                       "--hosts", "--json", "--until-stdin-eof"):
        assert documented in text


def test_the_older_module_entry_point_still_works() -> None:
    """`python -m poolhttp.cli._server` (the benchmark's): a JSON line, then serves until its
    standard input closes."""
    proc = subprocess.Popen([sys.executable, "-m", "poolhttp.cli._server", "--hosts", "2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env())
    try:
        origins = json.loads(read_line(proc))["origins"]
        with poolhttp.Client() as client:
            assert client.get(f"{origins[1]}/x?status=404").status_code == 404
        assert proc.stdin is not None
        proc.stdin.close()
        status, stderr = wait_exit(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert (status, stderr) == (0, "")
    assert_nothing_listens(proc.pid, origins)

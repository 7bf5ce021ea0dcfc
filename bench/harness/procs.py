"""Child processes that cannot outlive the benchmark: nginx and the client workers.

Each child runs in its own session (a Ctrl-C at the terminal reaches only the orchestrator,
which then stops them in order) and asks the kernel for a signal if the orchestrator dies
without cleaning up, e.g. when killed outright.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int) -> Callable[[], None]:
    """A preexec_fn: deliver `sig` to the child when the process that started it exits."""

    def setup() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # not Linux: the orchestrator's own clean-up still applies

    return setup


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a child started with start_new_session (its own group)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker process speaking the line protocol of harness.worker."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=cwd,
                env=env, start_new_session=True,
                preexec_fn=parent_death_signal(signal.SIGKILL))
        self._buffer = b""

    def ask(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        from .worker import ANSWER

        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise WorkerError(f"worker exited early: {self._log_tail()}") from exc
        deadline = time.monotonic() + timeout
        marker = ANSWER.encode()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    if line.startswith(marker):
                        answer: dict[str, Any] = json.loads(line[len(marker):])
                        return answer
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise WorkerError(f"no answer within {timeout:.0f} s; worker killed")
                if not sel.select(min(left, 1.0)):
                    continue
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    self.proc.wait(timeout=5)
                    raise WorkerError(f"worker exited with status {self.proc.returncode}: "
                                      f"{self._log_tail()}")
                self._buffer += data

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:].strip() or "(no output)"
        except OSError:
            return "(no output)"

    def close(self) -> None:
        """End of jobs: close stdin and wait a moment for a clean exit, else kill."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc)
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

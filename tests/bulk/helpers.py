"""Shared by the bulk tests: local servers, running the CLI, reading results databases."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from poolhttp.cli._server import LocalServer, ServerStats

REPO = Path(__file__).resolve().parents[2]


class ThreadedServer:
    """A LocalServer on its own event loop in a thread: for the sync client and for CLI
    subprocesses. Read `stats` after leaving the `with` block (or accept a racy snapshot)."""

    def __init__(self, hosts: int = 1, *, record_targets: bool = False) -> None:
        self._hosts = hosts
        self._record = record_targets
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="test server", daemon=True)
        self._error: BaseException | None = None
        self.origins: list[str] = []
        self.stats = ServerStats()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by __enter__/__exit__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with LocalServer(self._hosts, record_targets=self._record) as server:
            self.origins = server.origins
            self.stats = server.stats
            self._ready.set()
            await self._stop

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"test server did not start: {self._error!r}")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        loop, stop = self._loop, self._stop
        assert loop is not None
        assert stop is not None

        def finish() -> None:
            if not stop.done():
                stop.set_result(None)

        loop.call_soon_threadsafe(finish)
        self._thread.join(10)
        assert not self._thread.is_alive(), "test server thread did not stop"
        if self._error is not None:
            raise self._error


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COLUMNS", None)
    return env


def run_cli(args: Sequence[str], *, timeout: float = 60, stdin: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m poolhttp ARGS` in a child process."""
    result = subprocess.run([sys.executable, "-m", "poolhttp", *args], input=stdin,
                            capture_output=True, timeout=timeout, env=cli_env())
    done = subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8", "replace"),
                                       result.stderr.decode("utf-8", "replace"))
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path

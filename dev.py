#!/usr/bin/env python3
"""Set up and run poolhttp's jobs from a fresh clone, with nothing but python3 present.

    python3 dev.py demo     # the main job: the bulk fetcher against local demo servers
    python3 dev.py test     # lint, type-check and the whole test suite (installs its servers)
    python3 dev.py bench    # the side-by-side benchmark (see docs/benchmarks.md)

Each command creates `.venv/` on first use and installs what it needs into it. Debian packages the
tests need (nginx, and the proxies tinyproxy, microsocks and dante-server; the benchmark needs
nginx only) are installed with apt-get when missing, which needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed"


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def ensure_venv(extras: str) -> None:
    """Create .venv and install the package with `extras`, once per extras set."""
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = f"{extras}\n{(ROOT / 'pyproject.toml').stat().st_mtime_ns}"
    if STAMP.exists() and wanted in STAMP.read_text().split("\n\n"):
        return
    spec = f".[{extras}]" if extras else "."
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", spec)
    done = STAMP.read_text().split("\n\n") if STAMP.exists() else []
    STAMP.write_text("\n\n".join([*done, wanted]))


def ensure_debian_packages(binaries: dict[str, str]) -> None:
    """Install the Debian package for each missing binary (binary name -> package name)."""
    missing = [pkg for name, pkg in binaries.items() if not find_binary(name)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"dev.py: these Debian packages are needed: {' '.join(missing)}; "
                 "install them with apt-get (needs root) and run again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def cmd_demo(args: list[str]) -> None:
    ensure_venv("uvloop")
    run(BIN / "poolhttp", "demo", *args)


# Binary -> Debian package of the servers the tests run (tests/support/nginx.py, proxies.py).
TEST_PACKAGES = {
    "nginx": "nginx-light",
    "tinyproxy": "tinyproxy",
    "microsocks": "microsocks",
    "danted": "dante-server",
    "stunnel4": "stunnel4",
    "chromium": "chromium",  # headless, loads `poolhttp report` pages (tests/bulk)
}


def cmd_test(args: list[str]) -> None:
    ensure_debian_packages(TEST_PACKAGES)
    ensure_venv("test")
    run(BIN / "ruff", "check", "src", "tests", "bench", "dev.py")
    run(BIN / "mypy")
    run(BIN / "python", "-m", "pytest", *args)


def cmd_bench(args: list[str]) -> None:
    ensure_debian_packages({"nginx": "nginx-light"})
    run(sys.executable, ROOT / "bench" / "run.py", *args)


COMMANDS = {"demo": cmd_demo, "test": cmd_test, "bench": cmd_bench}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    try:
        COMMANDS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)


if __name__ == "__main__":
    main()

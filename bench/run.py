#!/usr/bin/env python3
"""The side-by-side benchmark: poolhttp and other Python HTTP clients against one local nginx.

    python3 dev.py bench                 # everything (~45 min); rewrites docs/benchmarks.md
    python3 dev.py bench --short         # headline workloads, fewer runs (< 2 min)
    python3 dev.py bench --smoke         # every client and workload once, tiny counts
    python3 dev.py bench --only poolhttp-asyncio,aiohttp-uvloop --workload get-c64

Runs with any python3 >= 3.10: on first use it creates .venv-bench/ with the repository's
poolhttp, its `bench` extra (the peers) and the pins of bench/requirements.txt, then re-runs
itself in it. `--setup-only` just brings .venv-bench/ up to date (the test suite does this
first); `--python-env current` uses the running interpreter as it is. See bench/README.md.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = ROOT / ".venv-bench"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".bench-installed"
# Held while .venv-bench is built, so that two runs at once (a test and a bench) build it once.
LOCK = Path(tempfile.gettempdir()) / (
    "poolhttp-venv-bench-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:16] + ".lock")
REQUIREMENTS = BENCH / "requirements.txt"
# Debian packages to build pycurl from source, for a Python without a pycurl wheel.
PYCURL_BUILD_PACKAGES = {"curl-config": "libcurl4-openssl-dev", "gcc": "gcc"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Clients: poolhttp-asyncio poolhttp-uvloop aiohttp-asyncio aiohttp-uvloop "
               "httpx-async aiosonic pyreqwest-asyncio pyreqwest-uvloop rnet-asyncio "
               "rnet-uvloop curl-cffi raw-asyncio raw-uvloop poolhttp-sync httpx-sync "
               "niquests requests urllib3 pycurl pyreqwest-sync httpr raw-sync; on the HTTPS "
               "workloads (only): poolhttp-noresume-asyncio poolhttp-noresume-uvloop "
               "poolhttp-sync-noresume; on the HTTP/2 "
               "workloads (only): poolhttp-h2-asyncio poolhttp-h2-uvloop poolhttp-h1-asyncio "
               "aiohttp-h1-asyncio httpx-h2 niquests-h2 pyreqwest-h2-asyncio curl-cffi-h2. "
               "Workloads: get-c64 get-c1 get-c512 body-16k body-1m post-1k origins-20 newconn "
               "https https-newconn https-newconn-c16 h2-c64 h2-c256 h2-1m idle-memory.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true",
                      help="headline workloads only, fewer requests and runs (< 2 minutes)")
    size.add_argument("--smoke", action="store_true",
                      help="every client on every workload once with tiny counts; no docs "
                           "unless --write-docs")
    p.add_argument("--only", metavar="CLIENT,...", help="run only these clients")
    p.add_argument("--workload", metavar="NAME,...", help="run only these workloads")
    p.add_argument("--runs", type=int, metavar="N", help="runs per client and workload "
                   "(default: 5 full, 3 short, 1 smoke)")
    p.add_argument("--scale", type=float, default=1.0, metavar="X",
                   help="multiply every workload's request count by X")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="longest a measured run may take, in seconds")
    p.add_argument("--python-env", choices=("bench", "current"), default="bench",
                   help="bench: build and use .venv-bench/ (default); current: use this "
                        "interpreter as it is")
    p.add_argument("--setup-only", action="store_true",
                   help="create or update .venv-bench/, then exit without measuring")
    p.add_argument("--fresh-processes", action="store_true",
                   help="with --smoke: still one process per run (slower; the default for "
                        "other modes)")
    p.add_argument("--write-docs", action="store_true",
                   help="write docs/benchmarks.md and .png even for --smoke or filtered runs")
    p.add_argument("--no-docs", action="store_true", help="never write the docs")
    p.add_argument("--docs-dir", metavar="DIR", help="where to write the docs (default: docs/)")
    p.add_argument("--results-dir", metavar="DIR",
                   help="where to save the JSON results (default: bench/results/)")
    p.add_argument("--note", metavar="TEXT",
                   help="a remark for the docs, under the line saying when and where it was "
                        "measured (e.g. that other work ran on the machine meanwhile)")
    p.add_argument("--render", metavar="RESULTS.json",
                   help="measure nothing: write the docs from a saved results file (with "
                        "--note, replacing its note)")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    if args.scale <= 0:
        p.error("--scale must be positive")
    return args


# -- bootstrap -----------------------------------------------------------------------------
def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (REQUIREMENTS, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def apt_install(packages: list[str], why: str) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"bench/run.py: {why} needs these Debian packages: {' '.join(packages)}; "
                 "install them (apt-get, as root) and run again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages, env=env)


def _pycurl_build_dependencies() -> None:
    """What a source build of pycurl needs: curl-config, a C compiler, Python's headers."""
    missing = [pkg for binary, pkg in PYCURL_BUILD_PACKAGES.items() if not shutil.which(binary)]
    missing.append("libssl-dev")  # pycurl links OpenSSL's headers when libcurl uses OpenSSL
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        missing.append("python3-dev")
    apt_install(missing, "building pycurl (no wheel for this Python)")


def _pip(*args: str) -> None:
    # niquests' urllib3-future, installed from a wheel, overwrites the real urllib3 package
    # at every interpreter start; built from source with this variable set, it installs
    # only as `urllib3_future` and leaves urllib3 alone.
    env = {**os.environ, "URLLIB3_NO_OVERRIDE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run(VENV_PYTHON, "-m", "pip", "install", "--quiet", *args, env=env)


def _pin(name: str) -> str:
    """The requirement line for `name` in bench/requirements.txt (for this Python)."""
    for line in REQUIREMENTS.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec.split("==", 1)[0].strip().lower() == name:
            return spec
    raise SystemExit(f"bench/run.py: {name} is not pinned in {REQUIREMENTS.name}")


def _check_urllib3() -> None:
    """Make sure `import urllib3` is urllib3, not urllib3-future standing in for it."""
    probe = ("import importlib.metadata as m, urllib3, sys; "
             "sys.exit(urllib3.__version__ != m.version('urllib3'))")
    if subprocess.run([str(VENV_PYTHON), "-c", probe], cwd=ROOT).returncode == 0:
        return
    print("bench/run.py: urllib3 is shadowed by urllib3-future; reinstalling both", flush=True)
    _pip("--force-reinstall", "--no-deps", "--no-cache-dir", "--no-binary", "urllib3-future",
         _pin("urllib3-future"), _pin("urllib3"))
    if subprocess.run([str(VENV_PYTHON), "-c", probe], cwd=ROOT).returncode != 0:
        sys.exit("bench/run.py: urllib3 is still shadowed by urllib3-future in .venv-bench; "
                 "remove .venv-bench and run again")


def ensure_bench_venv() -> Path:
    """Create .venv-bench and install what the benchmark needs, once per requirements set."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_bench_venv()


def _build_bench_venv() -> Path:
    if not VENV_PYTHON.exists():
        if importlib.util.find_spec("ensurepip") is None:
            apt_install([f"python3.{sys.version_info.minor}-venv"], "creating .venv-bench")
        print(f"+ creating {VENV.relative_to(ROOT)}/", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _fingerprint()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return VENV_PYTHON
    # The `bench` extra names the peers; requirements.txt pins them (and what they pull in).
    common = ["-e", ".[bench]", "-r", str(REQUIREMENTS), "--no-binary", "urllib3-future"]
    try:
        _pip(*common, "--only-binary", "pycurl")
    except subprocess.CalledProcessError:
        # The likely cause is no pycurl wheel for this Python: is there one?
        with tempfile.TemporaryDirectory() as tmp:
            probe = subprocess.run(
                [str(VENV_PYTHON), "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "-d", tmp, _pin("pycurl")], cwd=ROOT,
                capture_output=True, text=True)
        if probe.returncode == 0:
            raise  # pycurl has a wheel: the failure is something else, shown above
        _pycurl_build_dependencies()
        _pip(*common)
    _check_urllib3()
    STAMP.write_text(wanted + "\n")
    return VENV_PYTHON


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main() -> int:
    args = parse_args(sys.argv[1:])
    # The system python3 runs this file first; say so plainly if it is too old.
    if sys.version_info < (3, 10):  # noqa: UP036
        sys.exit("bench/run.py needs Python >= 3.10")
    if args.setup_only or (args.python_env == "bench" and not in_bench_venv()):
        try:
            python = ensure_bench_venv()
        except subprocess.CalledProcessError as exc:
            return exc.returncode or 1
        if args.setup_only:
            print(f"bench/run.py: {VENV.relative_to(ROOT)}/ is up to date ({python})")
            return 0
        # Same process id, so a Ctrl-C or SIGTERM reaches the benchmark itself.
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.path.insert(0, str(BENCH))
    from harness.orchestrate import main as orchestrate

    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())

"""Running a peer's own test suite over poolhttp: shared by the requests and httpx suite tests.

A pinned release's source distribution is downloaded with `pip download --no-binary`, checked
against its SHA-256 and kept in a cache directory between runs (nothing of it is kept in this
repository). A download that fails fails the test, with pip's reason: it never skips. After the
suite has run in a subprocess, its outcomes are judged against a list of known failures, which
must match exactly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def cache_dir() -> Path:
    """Where downloaded source distributions are kept between runs: $POOLHTTP_SUITE_CACHE,
    else poolhttp/suites under the user's cache directory."""
    given = os.environ.get("POOLHTTP_SUITE_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poolhttp" / "suites"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sdist(name: str, version: str, sha256: str) -> Path:
    """`name`'s sdist at `version`, from the cache or downloaded into it, checked."""
    cache = cache_dir()
    archive = cache / f"{name}-{version}.tar.gz"
    if archive.exists() and _sha256(archive) == sha256:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / f"download-{os.getpid()}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--disable-pip-version-check", f"{name}=={version}", "-d", str(download)],
            capture_output=True, text=True, timeout=180)
        found = list(download.glob(f"{name}-{version}.tar.gz"))
        if result.returncode != 0 or not found:
            pytest.fail(f"cannot download {name} {version}'s source distribution (pip exited "
                        f"{result.returncode}); this test needs it and does not skip:\n"
                        f"{result.stderr.strip()[-1500:]}")
        digest = _sha256(found[0])
        if digest != sha256:
            pytest.fail(f"{name} {version}'s source distribution has SHA-256 {digest}, not "
                        f"the pinned {sha256}")
        os.replace(found[0], archive)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return archive


def unpack(name: str, version: str, sha256: str, directory: Path) -> Path:
    """Unpack the checked sdist under `directory`; returns its top directory."""
    with tarfile.open(sdist(name, version, sha256)) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12 and later
            archive.extractall(directory / "unpacked", filter="data")
        else:  # pragma: no cover
            archive.extractall(directory / "unpacked")  # a checked sdist of a pinned release
    return directory / "unpacked" / f"{name}-{version}"


def judge(outcomes: dict[str, str], known: dict[str, str], tail: str) -> tuple[int, int]:
    """Fail unless the failures are exactly `known`; returns (passed, failed)."""
    failed = {test for test, outcome in outcomes.items() if outcome == "failed"}
    unexpected = sorted(failed - known.keys())
    now_passing = sorted(test for test in known if outcomes.get(test) == "passed")
    missing = sorted(test for test in known if test not in outcomes)
    problems = []
    if unexpected:
        problems.append(f"unexpected failures: {unexpected}")
    if now_passing:
        problems.append(f"known failures that now pass (drop them from KNOWN_FAILURES and "
                        f"docs/contrib.md): {now_passing}")
    if missing:
        problems.append(f"known failures that did not run: {missing}")
    assert not problems, "\n".join(problems) + f"\n{tail}"
    return sum(1 for outcome in outcomes.values() if outcome == "passed"), len(failed)

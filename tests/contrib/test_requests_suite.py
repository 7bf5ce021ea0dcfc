"""requests' own tests (`tests/test_requests.py` of its source distribution) with poolhttp's
`PoolAdapter` mounted on every `requests.Session` in place of `HTTPAdapter`.

The source distribution of a pinned requests release is downloaded at test time with
`pip download --no-binary` (checked against its SHA-256, and kept in a cache directory so that
later runs need no download; nothing of it is kept in this repository), unpacked into a
temporary directory and run in a subprocess against pytest-httpbin's local httpbin, with
`requests_suite_shim.py` as the root conftest. The sdist's own `requests` package is the one
imported there, so the tests match the code they test whatever requests is installed.

The outcome must match KNOWN_FAILURES exactly: any other failure fails this test, and so does a
known failure that now passes (drop it from the list and from docs/contrib.md, which explains
each entry). A download that fails fails the test too, with the reason: it never skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REQUESTS_VERSION = "2.32.5"
SDIST_SHA256 = "dbba0bac56e100853db0ea71b82b4dfd5fe2bf6d3754a8893c3af500cec7d7cf"
SUITE_TIMEOUT = 110.0  # seconds for the whole subprocess; it takes about 45 here

_POOLMANAGER = ("inspects HTTPAdapter's urllib3 PoolManager (adapter.poolmanager.pools); "
                "PoolAdapter has poolhttp clients instead")
# test id -> why it cannot pass over PoolAdapter.
KNOWN_FAILURES: dict[str, str] = {
    "tests/test_requests.py::TestRequests::test_session_close_proxy_clear":
        "patches HTTPAdapter's urllib3 ProxyManager dict (adapter.proxy_manager) and expects "
        "close() to call clear() on its entries",
    **{f"tests/test_requests.py::TestPreparingURLs::"
       f"test_different_connection_pool_for_tls_settings_{case}": _POOLMANAGER
       for case in ("verify_True", "verify_bundle_expired_cert",
                    "verify_bundle_unexpired_cert")},
}

_PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    default
"""


def _cache_dir() -> Path:
    """Where downloaded source distributions are kept between runs: $POOLHTTP_SUITE_CACHE,
    else poolhttp/suites under the user's cache directory."""
    given = os.environ.get("POOLHTTP_SUITE_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "poolhttp" / "suites"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sdist() -> Path:
    """requests' sdist at REQUESTS_VERSION, from the cache or downloaded into it."""
    cache = _cache_dir()
    archive = cache / f"requests-{REQUESTS_VERSION}.tar.gz"
    if archive.exists() and _sha256(archive) == SDIST_SHA256:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / f"download-{os.getpid()}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--disable-pip-version-check", f"requests=={REQUESTS_VERSION}",
             "-d", str(download)],
            capture_output=True, text=True, timeout=180)
        found = list(download.glob(f"requests-{REQUESTS_VERSION}.tar.gz"))
        if result.returncode != 0 or not found:
            pytest.fail(f"cannot download requests {REQUESTS_VERSION}'s source distribution "
                        f"(pip exited {result.returncode}); this test needs it and does not "
                        f"skip:\n{result.stderr.strip()[-1500:]}")
        digest = _sha256(found[0])
        if digest != SDIST_SHA256:
            pytest.fail(f"requests {REQUESTS_VERSION}'s source distribution has SHA-256 "
                        f"{digest}, not the pinned {SDIST_SHA256}")
        os.replace(found[0], archive)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return archive


def _unpack_suite(directory: Path) -> Path:
    """Unpack requests' sdist; returns the directory holding its tests/ and its package."""
    with tarfile.open(_sdist()) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12 and later
            archive.extractall(directory / "unpacked", filter="data")
        else:  # pragma: no cover
            archive.extractall(directory / "unpacked")  # a checked sdist of a pinned release
    source = directory / "unpacked" / f"requests-{REQUESTS_VERSION}"
    root = directory / "suite"
    root.mkdir()
    shutil.copytree(source / "src" / "requests", root / "requests")
    shutil.copytree(source / "tests", root / "tests")
    for path in source.iterdir():  # some tests read the sdist's own files (requirements-dev.txt)
        if path.is_file():
            shutil.copy(path, root / path.name)
    shutil.copy(Path(__file__).with_name("requests_suite_shim.py"), root / "conftest.py")
    (root / "pytest.ini").write_text(_PYTEST_INI)
    return root


@pytest.mark.timeout(SUITE_TIMEOUT + 200)
def test_requests_suite_over_pool_adapter(tmp_path: Path) -> None:
    root = _unpack_suite(tmp_path)
    report = tmp_path / "report.json"
    env = {**os.environ, "POOLHTTP_SUITE_REPORT": str(report), "PYTHONPATH": str(root)}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):
        env.pop(name, None)
        env.pop(name.lower(), None)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_requests.py", "-q",
             "--timeout", "30", "-p", "pytest_httpbin"],
            cwd=root, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"requests' suite did not finish within {SUITE_TIMEOUT} s:\n"
                    f"{(exc.stdout or b'')[-3000:]!r}")
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert report.exists(), f"the suite wrote no report (exit {run.returncode}):\n{tail}"
    data = json.loads(report.read_text())
    assert data["requests_version"] == REQUESTS_VERSION
    assert Path(data["requests_file"]).is_relative_to(root), data["requests_file"]
    outcomes: dict[str, str] = data["outcomes"]
    failed = {test for test, outcome in outcomes.items() if outcome == "failed"}
    unexpected = sorted(failed - KNOWN_FAILURES.keys())
    now_passing = sorted(test for test in KNOWN_FAILURES if outcomes.get(test) == "passed")
    missing = sorted(test for test in KNOWN_FAILURES if test not in outcomes)
    passed = sum(1 for outcome in outcomes.values() if outcome == "passed")
    print(f"requests {REQUESTS_VERSION} tests/test_requests.py: {passed} passed, "
          f"{len(failed)} failed ({len(KNOWN_FAILURES)} known), {len(data['over_pool'])} "
          f"tests sent requests through PoolAdapter ({data['carried']['requests']} requests, "
          f"{data['carried']['adapters']} adapters)")
    problems = []
    if unexpected:
        problems.append(f"unexpected failures: {unexpected}")
    if now_passing:
        problems.append(f"known failures that now pass (drop them from KNOWN_FAILURES and "
                        f"docs/contrib.md): {now_passing}")
    if missing:
        problems.append(f"known failures that did not run: {missing}")
    assert not problems, "\n".join(problems) + f"\n{tail}"
    # The shim is in force: a good share of the suite really went over poolhttp's pool.
    assert len(data["over_pool"]) >= 120, data["over_pool"]
    assert passed >= 320

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

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .peer_suites import judge, unpack

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


def _unpack_suite(directory: Path) -> Path:
    """Unpack requests' sdist; returns the directory holding its tests/ and its package."""
    source = unpack("requests", REQUESTS_VERSION, SDIST_SHA256, directory)
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
    passed, failed = judge(data["outcomes"], KNOWN_FAILURES, tail)
    print(f"requests {REQUESTS_VERSION} tests/test_requests.py: {passed} passed, "
          f"{failed} failed ({len(KNOWN_FAILURES)} known), {len(data['over_pool'])} "
          f"tests sent requests through PoolAdapter ({data['carried']['requests']} requests, "
          f"{data['carried']['adapters']} adapters)")
    # The shim is in force: a good share of the suite really went over poolhttp's pool.
    assert len(data["over_pool"]) >= 120, data["over_pool"]
    assert passed >= 320

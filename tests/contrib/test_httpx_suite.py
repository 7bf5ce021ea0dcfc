"""httpx's own client tests (`tests/client/` of its source distribution) with poolhttp's
transports under every client made without an explicit transport.

The source distribution of a pinned httpx release is downloaded at test time and checked
against its SHA-256 (see peer_suites.py: cached between runs, a failed download fails, nothing
of it is kept in this repository), unpacked into a temporary directory and run in a
subprocess, against the uvicorn server its conftest starts, with `httpx_suite_shim.py` as the
root conftest. The outcome must match KNOWN_FAILURES exactly: any other failure fails this
test, and a known failure that now passes is reported (and fails it too, so that the list is kept
true). docs/contrib.md explains each entry.
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

HTTPX_VERSION = "0.28.1"
SDIST_SHA256 = "75e98c5f16b0f35b567856f597f06ff2270a374470a5c2392242528e3e3e42fc"
SUITE_TIMEOUT = 240.0  # seconds for the whole subprocess; it takes about 10 here

# test id -> why it cannot pass over poolhttp's transport.
_HTTPCORE_PROXY = ("inspects httpcore's proxy pool (transport._pool._proxy_url); the request "
                   "is routed to the same proxy by httpx's mounts")
KNOWN_FAILURES: dict[str, str] = {
    "tests/client/test_proxies.py::test_socks_proxy":
        "asserts the transport is an httpx.HTTPTransport over an httpcore.SOCKSProxy",
    **{f"tests/client/test_proxies.py::test_proxies_environ[{client}-{case}]": _HTTPCORE_PROXY
       for client in ("Client", "AsyncClient")
       for case in ("http://google.com-env1-http://example.com",
                    "http://google.com-env2-http://example.com",
                    "http://127.0.0.1-env4-http://localhost:123",
                    "http://127.0.0.1-env6-http://localhost:123",
                    "http://127.0.0.1-env7-http://localhost:123",
                    "https://mit.edu.info-env9-http://localhost:123",
                    "https://mit.edu.info-env12-http://localhost:123",
                    "https://foo.example.com-env13-http://localhost:123",
                    "https://www.example2.com-env15-http://localhost:123")},
}

_PYTEST_INI = """\
[pytest]
addopts = -p no:cacheprovider
filterwarnings =
    error
    # An httpx client the suite leaves unclosed leaves its poolhttp client unclosed, which
    # poolhttp reports (httpx's own transport does not).
    ignore:.*was never closed:ResourceWarning
markers =
    copied_from(source, changes=None): a test copied from elsewhere
    network: needs the internet (deselected)
"""


def _unpack_suite(directory: Path) -> Path:
    """Unpack httpx's sdist (downloaded, or from the cache); returns the directory holding its
    tests/."""
    source = unpack("httpx", HTTPX_VERSION, SDIST_SHA256, directory)
    root = directory / "suite"
    root.mkdir()
    # httpx's own package from the same release, so that the tests match the code they test
    # whatever httpx version is installed; the transports import this one too.
    shutil.copytree(source / "httpx", root / "httpx")
    shutil.copytree(source / "tests", root / "tests")
    shutil.copy(Path(__file__).with_name("httpx_suite_shim.py"), root / "conftest.py")
    (root / "pytest.ini").write_text(_PYTEST_INI)
    return root


@pytest.mark.timeout(SUITE_TIMEOUT + 200)
def test_httpx_client_suite_over_poolhttp(tmp_path: Path) -> None:
    root = _unpack_suite(tmp_path)
    report = tmp_path / "report.json"
    env = {**os.environ, "POOLHTTP_SUITE_REPORT": str(report),
           "PYTHONPATH": str(root)}
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/client", "-q", "-m", "not network",
             "--timeout", "30"],
            cwd=root, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"httpx's suite did not finish within {SUITE_TIMEOUT} s:\n"
                    f"{(exc.stdout or b'')[-3000:]!r}")
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert report.exists(), f"the suite wrote no report (exit {run.returncode}):\n{tail}"
    data = json.loads(report.read_text())
    assert data["httpx_version"] == HTTPX_VERSION
    assert Path(data["httpx_file"]).is_relative_to(root), data["httpx_file"]
    passed, failed = judge(data["outcomes"], KNOWN_FAILURES, tail)
    print(f"httpx {HTTPX_VERSION} tests/client: {passed} passed, {failed} failed "
          f"({len(KNOWN_FAILURES)} known), {len(data['over_pool'])} tests sent requests "
          f"through poolhttp ({data['carried']['requests']} requests, "
          f"{data['carried']['transports']} transports)")
    # The shim is in force: a good share of the suite really went over poolhttp's pool.
    assert len(data["over_pool"]) >= 50, data["over_pool"]
    assert passed >= 280

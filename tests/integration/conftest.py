from __future__ import annotations

import pytest

from tests.integration.clients import CLIENT_KINDS

# The HTTP/2 tests' fixtures (test_http2_*.py): an H2Server factory and a leak check.
from tests.integration.h2helpers import h2_leak_check, h2server  # noqa: F401


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """"sync", "asyncio" or "uvloop": which client (and loop) a scenario test runs on."""
    return str(request.param)

from __future__ import annotations

import pytest

from tests.integration.clients import CLIENT_KINDS


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """"sync", "asyncio" or "uvloop": which client (and loop) a scenario test runs on."""
    return str(request.param)

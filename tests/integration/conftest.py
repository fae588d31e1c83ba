"""Fixtures of the integration tests that run against both databases."""
from __future__ import annotations

import os

import pytest

from tests.support.postgres import postgres_bin, postgres_server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """None (the workspace's own SQLite file) or the URL of a throw-away PostgreSQL server."""
    if request.param == "sqlite":
        yield None
        return
    if postgres_bin() is None:
        if os.environ.get("PAIRLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries are missing but PAIRLAB_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql); CI installs it")
    with postgres_server() as url:
        yield url

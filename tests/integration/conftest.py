"""Fixtures of the integration tests that run against both databases."""
from __future__ import annotations

import pytest

from tests.support.postgres import database_url as database_url_for


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """None (the workspace's own SQLite file) or the URL of a throw-away PostgreSQL server."""
    with database_url_for(request.param) as url:
        yield url

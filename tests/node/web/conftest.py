"""The world every web app test starts from: a node with its users and cases (the access
matrix's world), and a client of its app, on the backend under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.node.web.browser import web_world
from tests.security.node_access_world import NodeWorld


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, database_url: str, backend: str, tmp_path: Path
) -> AsyncIterator[tuple[NodeWorld, httpx.AsyncClient]]:
    async with web_world(request, database_url, backend, tmp_path) as found:
        yield found

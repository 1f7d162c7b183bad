"""A web app session ends when left idle for TRM_NODE_WEB_SESSION_IDLE_SECONDS, and at
TRM_NODE_WEB_SESSION_MAX_SECONDS after sign-in however busy (short settings here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.node.harness import rows
from tests.node.web.browser import Browser, web_world
from tests.security.node_access_world import N_CW, NAPTIP, NodeWorld
from trm_broker.node.web.sessions import WebSession

IDLE, MAXIMUM = 1.5, 3.0


@pytest.fixture
async def world(
    request: pytest.FixtureRequest, database_url: str, backend: str, tmp_path: Path
) -> AsyncIterator[tuple[NodeWorld, httpx.AsyncClient]]:
    async with web_world(
        request,
        database_url,
        backend,
        tmp_path,
        node_web_session_idle_seconds=IDLE,
        node_web_session_max_seconds=MAXIMUM,
    ) as found:
        yield found


def ended(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].endswith("note=ended")


async def test_a_session_ends_when_idle_and_at_its_absolute_limit(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    message = f"/web/messages/{min(node_world.received[NAPTIP.participant])}"

    idle = Browser(client)
    assert (await idle.sign_in(N_CW)).status_code == 303
    assert (await idle.get(message)).status_code == 200
    await asyncio.sleep(IDLE + 0.3)
    after_idle = await idle.get(message)
    assert ended(after_idle), after_idle.headers
    assert after_idle.headers["location"].startswith(f"/web/sign-in?next={message}")
    page = await idle.get(after_idle.headers["location"])
    assert "Your session ended" in page.text

    busy = Browser(client)
    assert (await busy.sign_in(N_CW)).status_code == 303
    for _ in range(int(MAXIMUM / 0.5) - 1):  # never idle, till just before the limit
        await asyncio.sleep(0.5)
        assert (await busy.get(message)).status_code == 200
    await asyncio.sleep(0.8)
    assert ended(await busy.get(message))
    # Ended sessions are deleted, not kept.
    assert await rows(node_world.database_url, WebSession) == []

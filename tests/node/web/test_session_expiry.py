"""A web app session ends when left idle for TRM_NODE_WEB_SESSION_IDLE_SECONDS, and at
TRM_NODE_WEB_SESSION_MAX_SECONDS after sign-in however busy: the node's own settings (30
minutes and 12 hours), with the web app's clock moved on by the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.node.harness import rows
from tests.node.web.browser import Browser
from tests.security.node_access_world import N_CW, NAPTIP, NodeWorld
from trm_broker.node.web.sessions import WebSession
from trm_broker.settings import Settings

IDLE = timedelta(seconds=Settings().node_web_session_idle_seconds)
MAXIMUM = timedelta(seconds=Settings().node_web_session_max_seconds)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def ended(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].endswith("note=ended")


async def test_a_session_ends_when_idle_and_at_its_absolute_limit(
    world: tuple[NodeWorld, httpx.AsyncClient],
) -> None:
    node_world, client = world
    clock = Clock()
    client._transport.app.state.web_clock = clock  # type: ignore[attr-defined]
    message = f"/web/messages/{min(node_world.received[NAPTIP.participant])}"
    assert IDLE < MAXIMUM

    idle = Browser(client)
    assert (await idle.sign_in(N_CW)).status_code == 303
    clock.now += IDLE - timedelta(seconds=1)
    assert (await idle.get(message)).status_code == 200  # just in time: seen again now
    clock.now += IDLE
    after_idle = await idle.get(message)
    assert ended(after_idle), after_idle.headers
    assert after_idle.headers["location"].startswith(f"/web/sign-in?next={message}")
    page = await idle.get(after_idle.headers["location"])
    assert "Your session ended" in page.text

    busy = Browser(client)
    assert (await busy.sign_in(N_CW)).status_code == 303
    started = clock.now
    step = IDLE / 2
    while clock.now + step < started + MAXIMUM:  # never idle, till just before the limit
        clock.now += step
        assert (await busy.get(message)).status_code == 200, clock.now - started
    clock.now = started + MAXIMUM
    assert ended(await busy.get(message))
    # Ended sessions are deleted, not kept.
    assert await rows(node_world.database_url, WebSession) == []

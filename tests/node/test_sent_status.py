"""The fate of every message the node sent (issue 18): the status tracker reads each one's
status at the broker (signed, as its sender) without anyone asking, and records each change
and when; `GET /sent` and `GET /sent/{message_id}` show them, and the case view joins them
with what was received, the consents, the open alerts and the broker's view.

A real in-process broker; the recipient (NG) is played by the test through the broker's
pull inbox, with its real key, as its node would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import TOKEN, node_database, node_settings, rows, running_node
from tests.support import Broker, broker_settings, polling, running_broker
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.store import SentStatus, SentStatusChange

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
AUTH = {"authorization": f"Bearer {TOKEN}"}
REFERRAL = {"destination_country": "NG", "is_child": False, "languages": ["en"]}
FAST = 0.05  # TRM_NODE_STATUS_POLL_SECONDS in these tests


class Wire(httpx.AsyncBaseTransport):
    """The way from the node to the broker; ``status_reads`` counts the node's reads of
    `GET /v1/messages/{id}`, ``hold_reads`` makes them hang until released."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.status_reads = 0
        self.hold_reads = False
        self.held = asyncio.Event()
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith("/v1/messages/"):
            self.status_reads += 1
            if self.hold_reads:
                self.held.set()
                await asyncio.Event().wait()  # never answers
            if self.down:
                raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    broker: Broker
    wire: Wire
    node: httpx.AsyncClient  # serves AT
    node_db: str
    case_ref: str = field(default_factory=lambda: f"AT-ST-{datetime.now(UTC):%H%M%S%f}")

    async def refer(self, case_ref: str | None = None) -> str:
        """AT's case worker refers a case to NG through the node; the receipted id."""
        case_ref = case_ref or self.case_ref
        consent = {
            "id": f"consent-{case_ref}",
            "case_ref": case_ref,
            "given_by": "person",
            "purposes": [t.value for t in MessageType],
            "recipients": [NG.participant],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "A" * 43,
        }
        response = await self.broker.call("POST", "/v1/consents", AT, json=consent)
        assert response.status_code == 201, response.text
        body = {
            "recipient": NG.participant,
            "payload": REFERRAL,
            "consent_ref": f"consent-{case_ref}",
        }
        sent = await self.node.post(
            f"/cases/{case_ref}/referral", json=body, headers={**AUTH, "prefer": "wait=30"}
        )
        assert sent.status_code == 201, sent.text
        message_id: str = sent.json()["message_id"]
        return message_id

    async def fetched_by_ng(self, message_id: str) -> dict[str, str]:
        """NG's node fetches its pull inbox (the broker marks the message delivered)."""
        response = await self.broker.call("GET", "/v1/inbox", NG)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        envelope: dict[str, str] = next(
            i["envelope"] for i in items if i["message_id"] == message_id
        )
        return envelope

    async def stored(self, message_id: str) -> dict[str, Any]:
        """The status the node holds in its own database: what the tracker wrote."""
        found = [r for r in await rows(self.node_db, SentStatus) if r["message_id"] == message_id]
        return found[0] if found else {}

    async def when_stored(self, message_id: str, status: str) -> dict[str, Any]:
        """Wait until the tracker recorded ``status``, without calling the node's API."""
        seen: dict[str, Any] = {}
        async for _ in polling():
            seen = await self.stored(message_id)
            if seen.get("status") == status:
                break
        assert seen.get("status") == status, seen
        return seen

    async def sent(self, message_id: str) -> dict[str, Any]:
        response = await self.node.get(f"/sent/{message_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


@pytest.fixture
async def world(
    database_url: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[World]:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            assert (await broker.register(keyset, country)).status_code == 201
        wire = Wire(httpx.ASGITransport(app=broker.app))
        node_db = node_database(request, tmp_path, backend)
        settings = node_settings(tmp_path, [AT], node_db, node_status_poll_seconds=FAST)
        async with (
            httpx.AsyncClient(transport=wire, base_url="http://broker") as to_broker,
            running_node(settings, to_broker, wait_for_receipt=False) as node,
        ):
            yield World(broker, wire, node, node_db)


def times(changes: list[dict[str, Any]]) -> list[str]:
    return [c["status"] for c in changes]


async def test_a_sent_message_goes_accepted_delivered_acknowledged_at_the_node_unasked(
    world: World,
) -> None:
    message_id = await world.refer()
    # Read at once after the receipt: the tracker was woken by it.
    accepted = await world.when_stored(message_id, "accepted")
    async for _ in polling():
        if (accepted := await world.stored(message_id))["checked_at"] is not None:
            break
    assert accepted["checked_at"] is not None, "the tracker never read the status"

    envelope = await world.fetched_by_ng(message_id)
    delivered = await world.when_stored(message_id, "delivered")
    assert delivered["delivered_at"] is not None

    await world.broker.acknowledge(envelope)
    done = await world.when_stored(message_id, "acknowledged")
    at_broker = (await world.broker.status(message_id, AT)).json()
    assert done["answered_at"] == datetime.fromisoformat(at_broker["delivery"]["acknowledged_at"])

    # Each change, with the broker's time and when the node learned it, in order.
    changes = [
        r for r in await rows(world.node_db, SentStatusChange) if r["message_id"] == message_id
    ]
    assert [c["status"] for c in changes] == ["accepted", "delivered", "acknowledged"]
    # The receipt's time (what the broker signed, to the millisecond).
    accepted_at = datetime.fromisoformat(at_broker["accepted_at"])
    assert abs(changes[0]["at"] - accepted_at) < timedelta(milliseconds=1)
    assert changes[1]["at"] == datetime.fromisoformat(at_broker["delivery"]["fetched_at"])
    assert changes[2]["at"] == done["answered_at"]
    assert all(c["seen_at"] >= c["at"] for c in changes)

    # The API shows it: the outbox's part, then the broker's; final, never read again.
    view = await world.sent(message_id)
    assert view["status"] == "acknowledged"
    assert view["final"] is True
    assert view["next_check_at"] is None
    assert view["receipt"]["message_id"] == message_id
    assert times(view["changes"]) == ["queued", "accepted", "delivered", "acknowledged"]
    reads = world.wire.status_reads
    await asyncio.sleep(20 * FAST)
    assert world.wire.status_reads == reads, "an acknowledged message was read again"

    listed = await world.node.get("/sent", params={"case_ref": world.case_ref}, headers=AUTH)
    assert [m["message_id"] for m in listed.json()["messages"]] == [message_id]
    by_status = await world.node.get("/sent", params={"status": "acknowledged"}, headers=AUTH)
    assert message_id in {m["message_id"] for m in by_status.json()["messages"]}
    other = await world.node.get("/sent", params={"status": "delivered"}, headers=AUTH)
    assert message_id not in {m["message_id"] for m in other.json()["messages"]}


async def test_a_rejected_message_shows_rejected_with_the_reasons_the_broker_gives(
    world: World,
) -> None:
    message_id = await world.refer()
    envelope = await world.fetched_by_ng(message_id)
    reasons = ["payload/languages: expected an array"]
    answer = await world.broker.answer(
        envelope, status="rejected", reasons=reasons, code="payload-invalid"
    )
    assert answer.status_code == 200, answer.text
    await world.when_stored(message_id, "rejected")
    view = await world.sent(message_id)
    assert view["status"] == "rejected"
    assert view["final"] is True
    assert view["answered_at"] is not None
    assert times(view["changes"])[-1] == "rejected"
    # The recipient's reasons reach the sender when the broker gives them (issue 18's
    # `rejection` of `GET /v1/messages/{id}`); the node passes on what it is given.
    at_broker = (await world.broker.status(message_id, AT)).json()
    assert view["rejection"] == at_broker.get("rejection")


async def test_a_dead_letter_shows_dead_lettered_and_its_alert_in_the_case_view(
    world: World,
) -> None:
    message_id = await world.refer()
    await world.when_stored(message_id, "accepted")
    broker_state = world.broker.app.state.broker
    async with httpx.AsyncClient() as unused:
        dispatcher = DeliveryDispatcher(
            broker_state.sessions,
            unused,
            timeout=30,
            poll_interval=0.1,
            backoff_cap=0.01,
            max_age=3600,
            policy=InboxPolicy(allow_loopback=True),
            signing_key=broker_state.signing_key,
        )
        assert await dispatcher.sweep(datetime.now(UTC) + timedelta(hours=2)) == 1
    stored = await world.when_stored(message_id, "dead_lettered")
    assert stored["dead_lettered_at"] is not None
    view = await world.sent(message_id)
    assert (view["status"], view["final"]) == ("dead_lettered", True)
    assert view["next_check_at"] is not None  # read again, slowly: an operator may re-queue
    assert times(view["changes"])[-1] == "dead_lettered"

    case = await world.node.get(f"/cases/{world.case_ref}", headers=AUTH)
    assert case.status_code == 200, case.text
    body = case.json()
    assert [a["kind"] for a in body["alerts"]] == ["delivery_dead_lettered"]
    [entry] = body["timeline"]
    assert (entry["direction"], entry["status"]) == ("sent", "dead_lettered")
    assert body["broker"]["case_ref"] == world.case_ref
    assert [(c["id"], c["state"]) for c in body["consents"]] == [
        (f"consent-{world.case_ref}", "active")
    ]


async def test_queued_and_refused_messages_show_as_such_with_what_to_fix(world: World) -> None:
    warm = await world.refer()  # the node has read the registry: it can seal while cut off
    assert (await world.sent(warm))["status"] in ("accepted", "delivered")
    # No consent for this case: the broker refuses it for good.
    body = {"recipient": NG.participant, "payload": REFERRAL, "consent_ref": "consent-none"}
    refused = await world.node.post(
        f"/cases/{world.case_ref}-2/referral", json=body, headers={**AUTH, "prefer": "wait=30"}
    )
    assert refused.status_code == 403, refused.text
    [message] = (await world.node.get("/sent", params={"status": "refused"}, headers=AUTH)).json()[
        "messages"
    ]
    view = await world.sent(message["message_id"])
    assert (view["status"], view["final"]) == ("refused", True)
    assert view["refused"]["rule"]
    assert view["refused"]["detail"]
    assert times(view["changes"]) == ["queued", "refused"]


async def test_a_status_read_that_fails_is_tried_again_and_the_tracker_stops_at_once(
    database_url: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            assert (await broker.register(keyset, country)).status_code == 201
        wire = Wire(httpx.ASGITransport(app=broker.app))
        node_db = node_database(request, tmp_path, backend)
        settings = node_settings(tmp_path, [AT], node_db, node_status_poll_seconds=FAST)
        async with httpx.AsyncClient(transport=wire, base_url="http://broker") as to_broker:
            started = time.monotonic()
            async with running_node(settings, to_broker, wait_for_receipt=False) as node:
                world = World(broker, wire, node, node_db)
                wire.down = True
                message_id = await world.refer()
                async for _ in polling():
                    failing = await world.stored(message_id)
                    if failing.get("failed_checks", 0) >= 2:
                        break
                assert failing["check_error"] == "broker_unreachable"
                assert failing["status"] == "accepted"
                wire.down = False
                await world.when_stored(message_id, "accepted")
                async for _ in polling():
                    if (await world.stored(message_id))["check_error"] is None:
                        break
                assert (await world.stored(message_id))["failed_checks"] == 0
                # A read that never answers: stopping the node does not wait for it.
                wire.hold_reads = True
                await world.fetched_by_ng(message_id)  # a change, read at once
                await asyncio.wait_for(wire.held.wait(), timeout=30)
                stopping = time.monotonic()
            stopped_in = time.monotonic() - stopping
    assert stopped_in < 5.0, f"the node took {stopped_in:.1f} s to stop"
    assert stopping > started

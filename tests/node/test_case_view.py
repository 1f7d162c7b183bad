"""The node's case view (issue 18): one organisation's timeline of the messages it sent (with
their statuses, kept current by the node) and received, the case's consents, open alerts,
deadlines and next steps, and the broker's view; another organisation served by the same
node sees none of it.

The world of the node's access matrix (tests/security/node_access_world.py): a node serving
NAPTIP and a shelter; in case A, Austria refers to NAPTIP, NAPTIP answers and assesses the
risk, Austria's node fetches both and acknowledges the assessment, and Austria sends the
return plan to NAPTIP and to the shelter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.node_access_world import (
    NAPTIP,
    SHELTER,
    NodeWorld,
    node_world,
)
from tests.support import broker_settings, polling, running_broker

N_CW, S_RO = "naptip.cw", "shelter.ro"


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[NodeWorld]:
    async with (
        running_broker(broker_settings(database_url, tmp_path)) as broker,
        node_world(broker, tmp_path, node_status_poll_seconds=0.05) as world,
    ):
        yield world


async def view(world: NodeWorld, caller: str, case: str = "A") -> dict[str, Any]:
    response = await world.node.get(f"/cases/{world.case[case]}", headers=world.auth(caller))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def entries(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["direction"], e["type"], e["status"]) for e in body["timeline"]]


async def test_the_case_view_joins_what_one_organisation_sent_and_received(
    world: NodeWorld,
) -> None:
    response_id, assessment_id = world.sent
    body: dict[str, Any] = {}
    async for _ in polling():
        body = await view(world, N_CW)
        statuses = {e["message_id"]: e["status"] for e in body["timeline"]}
        if statuses.get(assessment_id) == "acknowledged" and statuses.get(response_id) == (
            "delivered"
        ):
            break
    # Austria fetched both from its pull inbox, and acknowledged the assessment only.
    assert entries(body) == [
        ("received", "referral", "received"),
        ("sent", "referral_response", "delivered"),
        ("sent", "risk_assessment", "acknowledged"),
        ("received", "return_preparation", "received"),
    ]
    assert body["reader"] == NAPTIP.participant
    sent = [e["sent"] for e in body["timeline"] if e["direction"] == "sent"]
    assert [s["message_id"] for s in sent] == [response_id, assessment_id]
    assert [c["status"] for c in sent[1]["changes"]] == [
        "queued",
        "accepted",
        "delivered",
        "acknowledged",
    ]
    received = [e["received"] for e in body["timeline"] if e["direction"] == "received"]
    assert all(r["recipient"] == NAPTIP.participant and r["payload"] for r in received)
    assert {e["consent_ref"] for e in body["timeline"]} == {world.consent["A"]}
    assert [(c["id"], c["state"]) for c in body["consents"]] == [(world.consent["A"], "active")]
    assert body["stage"] == body["broker"]["stage"]
    # Deadlines and next steps are the broker's, passed through as it states them.
    assert body["deadlines"] == body["broker"].get("deadlines")
    assert body["next_steps"] == body["broker"].get("next_steps")
    assert body["broker_problem"] is None


async def test_another_organisation_of_the_node_sees_only_its_own(world: NodeWorld) -> None:
    body = await view(world, S_RO)
    assert body["reader"] == SHELTER.participant
    assert entries(body) == [("received", "return_preparation", "received")]
    naptips = world.received[NAPTIP.participant] | set(world.sent)
    assert not naptips & {e["message_id"] for e in body["timeline"]}

    listed = await world.node.get("/sent", headers=world.auth(S_RO))
    assert listed.json() == {"messages": []}
    for message_id in world.sent:
        one = await world.node.get(f"/sent/{message_id}", headers=world.auth(S_RO))
        assert one.status_code == 404, one.text
    # Case B is NAPTIP's alone: to the shelter, the broker's "not found", and nothing here.
    other = await world.node.get(f"/cases/{world.case['B']}", headers=world.auth(S_RO))
    assert other.status_code == 404, other.text
    assert world.case["B"] not in other.text

    # NAPTIP's own list has its two, in the order they were queued.
    mine = await world.node.get("/sent", headers=world.auth(N_CW))
    assert [m["message_id"] for m in mine.json()["messages"]] == world.sent

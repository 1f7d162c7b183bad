"""Replying without copying ids (issue 18), with a real broker and node: a received message
shows the consent it came under and what its recipient may send next; a reply that names no
consent is sent under the one consent of the case that covers it, and refused, naming the
candidates, when none or several do; a message the recipient's node rejects tells its sender
why at the broker, and nobody else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.domain.test_payloads import FULL
from tests.node.test_case_api import (
    AT,
    AUTH,
    NG,
    RO,
    World,
    register_consent,
    world,
)
from tests.support import PROBLEM, envelope
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.messages import DataCategory, MessageType

__all__ = ["world"]  # the fixture
T = MessageType


async def deliver(world: World) -> None:
    """The broker pushes what waits to the node (which serves AT, NG and the NGO)."""
    dispatcher = DeliveryDispatcher(
        world.broker.app.state.broker.sessions,
        world.node,
        timeout=30,
        poll_interval=0.1,
        backoff_cap=1,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=world.broker.app.state.broker.signing_key,
    )
    while await dispatcher.run_once():
        pass


async def another_consent(world: World, consent_id: str, purposes: list[MessageType]) -> str:
    body = {
        "id": consent_id,
        "case_ref": world.case_ref,
        "given_by": "person",
        "purposes": [t.value for t in purposes],
        "recipients": [NG.participant, RO.participant, AT.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "C" * 43,
    }
    response = await world.broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text
    return consent_id


async def referred(world: World, consent_ref: str) -> str:
    """AT refers the case to NG through the node; NG's side of the node receives it."""
    sent = await world.post(
        f"/cases/{world.case_ref}/referral",
        {
            "sender": AT.participant,
            "recipient": NG.participant,
            "payload": FULL[T.REFERRAL],
            "consent_ref": consent_ref,
        },
    )
    assert sent.status_code == 201, sent.text
    await deliver(world)
    message_id: str = sent.json()["message_id"]
    return message_id


async def reply(world: World, **changes: Any) -> Any:
    """NG accepts the referral, naming no consent unless told to."""
    return await world.post(
        f"/cases/{world.case_ref}/referral-response",
        {
            "sender": NG.participant,
            "recipient": AT.participant,
            "payload": {k: v for k, v in FULL[T.REFERRAL_RESPONSE].items() if k != "decline_reason"}
            | {"accepted": True},
            **changes,
        },
    )


def submitted_consent(world: World) -> str | None:
    claims = jws.parse(world.recording.submitted[-1], jws.TYP_ENVELOPE).claims()
    consent_ref: str | None = claims.get("consent_ref")
    return consent_ref


async def test_a_received_message_shows_its_consent_and_next_steps_and_the_reply_cites_it(
    world: World,
) -> None:
    consent_ref = await register_consent(world)
    referral_id = await referred(world, consent_ref)
    one = await world.node.get(f"/messages/{referral_id}", headers=AUTH)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["type"], body["recipient"], body["consent_ref"]) == (
        "referral",
        NG.participant,
        consent_ref,
    )
    assert body["payload"] == FULL[T.REFERRAL]
    assert body["next_steps_unavailable"] is None
    steps = {(s["type"], s["recipient"]): s for s in body["next_steps"]}
    answer = steps[("referral_response", AT.participant)]
    assert (answer["allowed"], answer["consents"]) == (True, [consent_ref])
    blocked = steps[("risk_assessment", AT.participant)]
    assert (blocked["allowed"], blocked["rule"]) == (False, "risk_assessment_needs_acceptance")
    # The list shows the same, and leaves the steps out when asked to.
    listed = (await world.node.get("/messages", headers=AUTH)).json()["messages"]
    assert [(m["message_id"], m["consent_ref"]) for m in listed] == [(referral_id, consent_ref)]
    assert listed[0]["next_steps"] == body["next_steps"]
    bare = await world.node.get("/messages?next_steps=false", headers=AUTH)
    assert [(m["next_steps"], m["next_steps_unavailable"]) for m in bare.json()["messages"]] == [
        (None, "not-asked")
    ]

    # The reply names no consent: the node cites the only one that covers it.
    before = len(world.recording.submitted)
    answered = await reply(world)
    assert answered.status_code == 201, answered.text
    assert len(world.recording.submitted) == before + 1
    assert submitted_consent(world) == consent_ref
    case = await world.node.get(f"/cases/{world.case_ref}?reader={NG.participant}", headers=AUTH)
    assert case.json()["stage"] == "accepted"


async def test_a_reply_is_refused_naming_the_candidates_when_several_or_no_consents_cover_it(
    world: World,
) -> None:
    consent_ref = await register_consent(world)
    referral_id = await referred(world, consent_ref)
    second = await another_consent(world, f"second-{world.case_ref}", [T.REFERRAL_RESPONSE])
    before = len(world.recording.submitted)
    several = await reply(world)
    assert several.status_code == 400, several.text
    assert several.headers["content-type"] == PROBLEM
    problem = several.json()
    assert problem["type"] == "urn:trm-broker:problem:consent-not-chosen"
    assert sorted(problem["candidates"]) == sorted([consent_ref, second])
    assert "consent_ref" in problem["detail"]
    assert len(world.recording.submitted) == before  # nothing was queued, nothing sent
    # Both are shown as the reply's consents on the message itself.
    body = (await world.node.get(f"/messages/{referral_id}", headers=AUTH)).json()
    steps = {(s["type"], s["recipient"]): s for s in body["next_steps"]}
    assert sorted(steps[("referral_response", AT.participant)]["consents"]) == sorted(
        [consent_ref, second]
    )
    # Naming one of them, the reply goes.
    chosen = await reply(world, consent_ref=second)
    assert chosen.status_code == 201, chosen.text
    assert submitted_consent(world) == second

    # A risk assessment to NG under neither (one covers referrals only): none covers it.
    await world.broker.call("POST", f"/v1/consents/{consent_ref}/withdraw", AT)
    none = await world.post(
        f"/cases/{world.case_ref}/risk-assessment",
        {
            "sender": AT.participant,
            "recipient": NG.participant,
            "payload": FULL[T.RISK_ASSESSMENT] | {"assessed_at": datetime.now(UTC).isoformat()},
        },
    )
    assert none.status_code == 400, none.text
    assert none.json()["candidates"] == []
    assert "POST /consents" in none.json()["detail"]


async def test_a_message_of_a_case_not_yet_at_the_broker_needs_its_consent_named(
    world: World,
) -> None:
    await register_consent(world)
    sent = await world.post(
        f"/cases/{world.case_ref}/referral",
        {"sender": AT.participant, "recipient": NG.participant, "payload": FULL[T.REFERRAL]},
    )
    assert sent.status_code == 400, sent.text
    assert sent.json()["type"] == "urn:trm-broker:problem:consent-not-chosen"
    assert sent.json()["candidates"] == []


async def test_a_message_not_received_here_is_not_found(world: World) -> None:
    """(Another organisation's messages on the same node: tests/security's access matrix.)"""
    consent_ref = await register_consent(world)
    await referred(world, consent_ref)
    unknown = await world.node.get("/messages/0190f0f0-0000-7000-8000-000000000000", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM
    malformed = await world.node.get("/messages/not-an-id", headers=AUTH)
    assert malformed.status_code == 400


async def test_a_rejected_message_tells_its_sender_why_at_the_broker_and_nobody_else(
    world: World,
) -> None:
    consent_ref = await register_consent(world)
    await referred(world, consent_ref)
    assert (await reply(world)).status_code == 201
    await deliver(world)
    # A sending node that lies: the header says low risk, the payload says otherwise.
    payload = FULL[T.RISK_ASSESSMENT] | {"assessed_at": datetime.now(UTC).isoformat()}
    lie = envelope(
        AT,
        NG,
        T.RISK_ASSESSMENT,
        {
            "risk_level": "low",
            "return_recommended": True,
            "assessed_at": payload["assessed_at"],
        },
        case_ref=world.case_ref,
        consent_ref=consent_ref,
        payload=payload,
    )
    submitted = await world.broker.submit(lie)
    assert submitted.status_code == 202, submitted.text
    message_id = submitted.json()["message_id"]
    await deliver(world)  # NG's side of the node opens it, and rejects it, signed
    sender = (await world.broker.status(message_id, AT)).json()
    assert sender["status"] == "rejected"
    rejection = sender["rejection"]
    assert rejection["code"] == "header-payload-mismatch"
    assert rejection["reasons"]
    assert all(r.startswith(("header/", "data_categories")) for r in rejection["reasons"])
    assert (await world.broker.status(message_id, NG)).json()["rejection"] is None

"""What the broker's case view tells each party (issue 18): what it may send next and under
which consent, what blocks the rest, the deadlines; and a rejected message's status, which
tells its sender why (code and locations), and nobody else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_case_safeguards import (
    AT,
    AUDITOR,
    NG,
    SHELTER,
    accepted,
    assessment,
    message,
    open_case,
    plan,
)
from tests.support import Broker, broker_settings, running_broker
from trm_broker.domain.messages import MessageType

T = MessageType


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        b.auto_consent = False  # each test registers the consents it needs
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
            (AUDITOR, "AT", "auditor"),
        ]:
            inbox = f"https://{keyset.participant}.example/inbox"
            response = await b.register(keyset, country, kind=kind, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield b


async def view(broker: Broker, case: str, reader: Any = AT) -> dict[str, Any]:
    response = await broker.call("GET", f"/v1/cases/{case}", reader)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def steps_of(body: dict[str, Any], participant: str) -> dict[tuple[str, str], dict[str, Any]]:
    (party,) = [p for p in body["next_steps"] if p["participant"] == participant]
    return {(s["type"], s["recipient"]): s for s in party["steps"]}


async def test_the_case_view_offers_each_party_its_next_steps_under_the_case_consent(
    broker: Broker,
) -> None:
    case = "AT-2026-0300"
    consent_ref = await open_case(broker, case)
    body = await view(broker, case, NG)
    roles = {p["participant"]: p["role"] for p in body["next_steps"]}
    assert roles == {
        AT.participant: "sending_focal_point",
        NG.participant: "destination_focal_point",
    }
    # The consent's scope is shown to the parties, so a reply can cite it.
    (scope,) = body["consents"]
    assert (scope["id"], scope["registered_by"]) == (consent_ref, AT.participant)
    assert "return_preparation" in scope["purposes"]
    assert SHELTER.participant in scope["recipients"]
    # NG may assess; AT may not prepare a return until an assessment recommending it counts.
    assess = steps_of(body, NG.participant)[("risk_assessment", AT.participant)]
    assert (assess["allowed"], assess["consents"]) == (True, [consent_ref])
    waiting = steps_of(body, AT.participant)[("return_preparation", NG.participant)]
    assert waiting["allowed"] is False
    assert waiting["rule"] == "return_preparation_needs_recent_recommending_risk_assessment"
    assert "there is none" in waiting["detail"]
    # The rule's window, for a refusal said in another language: 30 days by default.
    assert waiting["window_seconds"] == 30 * 86400
    assert assess["window_seconds"] is None
    assert ("referral_response", AT.participant) not in steps_of(body, NG.participant)
    assert body["deadlines"] == []

    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    await accepted(await broker.submit(assessed))
    pending = steps_of(await view(broker, case), AT.participant)
    assert pending[("return_preparation", NG.participant)]["rule"] == (
        "risk_assessment_not_yet_acknowledged"
    )
    await broker.acknowledge(assessed)
    ready = steps_of(await view(broker, case), AT.participant)[
        ("return_preparation", NG.participant)
    ]
    assert (ready["allowed"], ready["consents"]) == (True, [consent_ref])
    # What is offered is accepted, under the consent named.
    the_plan = plan()
    await accepted(
        await broker.submit(
            message(AT, NG, T.RETURN_PREPARATION, the_plan, case, ready["consents"][0])
        )
    )
    body = await view(broker, case, SHELTER)
    assert {p["role"] for p in body["next_steps"]} == {
        "sending_focal_point",
        "destination_focal_point",
        "receiving_org",
    }
    org = steps_of(body, SHELTER.participant)
    assert org[("reception_plan_response", AT.participant)]["rule"] == (
        "needs_plan_sent_to_receiving_org"
    )
    assert org[("reception_confirmation", NG.participant)]["allowed"] is True
    (due,) = body["deadlines"]
    arrival = datetime.fromisoformat(the_plan["planned_arrival"])
    assert due["name"] == "reception_due"
    assert datetime.fromisoformat(due["due_at"]) == arrival + timedelta(hours=48)
    assert (due["overdue"], due["alert"]) == (False, "reception_overdue")


async def test_a_rejection_tells_its_sender_why_and_nobody_else(broker: Broker) -> None:
    case = "AT-2026-0301"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    message_id = await accepted(await broker.submit(assessed))
    before = await broker.status(message_id, NG)
    assert before.json()["rejection"] is None  # not answered yet
    reasons = ["payload/threats/0: not a known code", "header/risk_level: does not match"]
    answer = await broker.answer(
        assessed, status="rejected", reasons=reasons, code="payload-invalid"
    )
    assert answer.status_code == 200, answer.text
    sender = await broker.status(message_id, NG)
    assert sender.status_code == 200, sender.text
    body = sender.json()
    assert body["status"] == "rejected"
    rejection = body["rejection"]
    assert (rejection["code"], rejection["reasons"]) == ("payload-invalid", reasons)
    assert body["delivery"]["acknowledged_at"] is not None  # when it was recorded
    # The recipient signed it; it is not shown back to it, nor to anyone not a party.
    recipient = await broker.status(message_id, AT)
    assert (recipient.status_code, recipient.json()["rejection"]) == (200, None)
    assert (await broker.status(message_id, AUDITOR)).status_code == 404
    # An acknowledged message carries none.
    other = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    other_id = await accepted(await broker.submit(other))
    await broker.acknowledge(other)
    assert (await broker.status(other_id, NG)).json()["rejection"] is None

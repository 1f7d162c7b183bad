"""The receiving organisation through the broker's API: it is sent the return plan in force,
sealed to its own key and under a consent that names it; it answers the plan and records
its contact with the person before travel; nobody else may do either for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.api.test_case_transfer import (
    AT,
    AUDITOR,
    NG,
    OTHER,
    SHELTER,
    T,
    assert_problem,
    iso,
    register_consent,
    send,
)
from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType
from trm_broker.store.models import Delivery, LedgerEntry

OTHER_SHELTER = KeySet.generate("ng.caritas")  # registered in Nigeria, not designated


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    async with running_broker(broker_settings(database_url, tmp_path)) as b:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
            (OTHER_SHELTER, "NG", "receiving_org"),
            (OTHER, "FR", "focal_point"),
            (AUDITOR, "AT", "auditor"),
        ]:
            inbox = f"https://{keyset.participant}.example/inbox"
            response = await b.register(keyset, country, kind=kind, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield b


async def accepted(broker: Broker, case: str, **consent: Any) -> None:
    """A case referred and accepted under a consent naming both shelters (``consent``:
    what differs)."""
    parties = [NG, SHELTER, OTHER_SHELTER, AT]
    consent = {"recipients": [p.participant for p in parties], **consent}
    assert (await register_consent(broker, case, **consent)).status_code == 201
    assert (await broker.submit(referral(AT, NG, case_ref=case))).status_code == 202
    response = send(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case)
    assert (await broker.submit(response)).status_code == 202


async def prepared(broker: Broker, case: str, **consent: Any) -> dict[str, str]:
    """A case whose return is prepared with the shelter; the plan's header."""
    now = datetime.now(UTC)
    await accepted(broker, case, **consent)
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    envelope = send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    assessed = await broker.submit(envelope)
    assert assessed.status_code == 202, assessed.text
    await broker.acknowledge(envelope)  # it counts once its recipient's node has it
    plan = {
        "receiving_org": SHELTER.participant,
        "planned_arrival": iso(now + timedelta(days=5)),
    }
    to_ng = await broker.submit(send(AT, NG, T.RETURN_PREPARATION, plan, case))
    assert to_ng.status_code == 202, to_ng.text
    return plan


async def state(broker: Broker, case: str, reader: KeySet = AT) -> dict[str, Any]:
    view = await broker.call("GET", f"/v1/cases/{case}", reader)
    assert view.status_code == 200, view.text
    found: dict[str, Any] = view.json()["state"]
    return found


async def test_the_plan_goes_to_the_receiving_organisation_and_every_party_sees_it(
    broker: Broker,
) -> None:
    case = "AT-2026-0200"
    plan = await prepared(broker, case)
    assert (await state(broker, case))["plan_sent_to_org"] is None

    to_shelter = await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, plan, case))
    assert to_shelter.status_code == 202, to_shelter.text
    message_id = to_shelter.json()["message_id"]

    # Its own delivery, to the shelter's inbox, and its own ledger entry naming the shelter.
    async with broker.app.state.broker.sessions() as session:
        delivery = (
            await session.scalars(select(Delivery).where(Delivery.message_id == message_id))
        ).one()
        accepted = (
            await session.scalars(
                select(LedgerEntry).where(
                    LedgerEntry.type == EventType.MESSAGE_ACCEPTED,
                    LedgerEntry.case_ref == case,
                    LedgerEntry.party2 == SHELTER.participant,
                )
            )
        ).all()
    assert delivery.recipient_id == SHELTER.participant
    assert len(accepted) == 1
    status = await broker.status(message_id, SHELTER)
    assert status.status_code == 200, status.text

    # Both focal points, and the shelter, see that the shelter was sent the plan; the stage
    # and the plan stay as they were.
    for party in (AT, NG, SHELTER):
        seen = await state(broker, case, party)
        assert seen["stage"] == "return_prepared"
        assert seen["plan_sent_to_org"] == message_id
        assert seen["receiving_org"] == SHELTER.participant
    view = (await broker.call("GET", f"/v1/cases/{case}", NG)).json()
    assert [(i["type"], i["recipient"], i["delivery_status"]) for i in view["timeline"]][-2:] == [
        ("return_preparation", NG.participant, "pending"),
        ("return_preparation", SHELTER.participant, "pending"),  # until its node acknowledges
    ]


async def test_a_plan_to_the_organisation_other_than_the_plan_in_force_is_refused(
    broker: Broker,
) -> None:
    case = "AT-2026-0201"
    now = datetime.now(UTC)
    await accepted(broker, case)
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    envelope = send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    assert (await broker.submit(envelope)).is_success
    await broker.acknowledge(envelope)
    plan = {"receiving_org": SHELTER.participant, "planned_arrival": iso(now + timedelta(days=5))}

    # Before the destination focal point has the plan, the shelter is no party of the case.
    first = await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, plan, case))
    assert assert_problem(first, 409, "workflow-rule")["rule"] == "not_a_party_of_this_case"
    assert (await broker.submit(send(AT, NG, T.RETURN_PREPARATION, plan, case))).is_success

    other_date = {**plan, "planned_arrival": iso(now + timedelta(days=6))}
    other_org = {**plan, "receiving_org": OTHER_SHELTER.participant}
    for header in (other_date, other_org):
        refused = await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, header, case))
        body = assert_problem(refused, 409, "workflow-rule")
        assert body["rule"] == "return_plan_to_org_must_match_plan"
        assert "same planned arrival" in body["detail"]
    # An organisation not designated is no party; the destination may not send the plan on.
    stranger = await broker.submit(send(AT, OTHER_SHELTER, T.RETURN_PREPARATION, other_org, case))
    assert assert_problem(stranger, 409, "workflow-rule")["rule"] == "not_a_party_of_this_case"
    by_ng = await broker.submit(send(NG, SHELTER, T.RETURN_PREPARATION, plan, case))
    body = assert_problem(by_ng, 409, "workflow-rule")
    assert body["rule"] == "return_preparation_only_from_sending_to_destination"
    assert (await state(broker, case))["plan_sent_to_org"] is None


async def test_the_plan_goes_to_the_organisation_only_under_a_consent_that_names_it(
    broker: Broker,
) -> None:
    case = "AT-2026-0202"
    plan = await prepared(broker, case, recipients=[NG.participant, AT.participant])
    refused = await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, plan, case))
    body = assert_problem(refused, 403, "consent-refused")
    assert body["gaps"] == ["recipient"]
    assert (await state(broker, case))["plan_sent_to_org"] is None


async def test_the_organisation_answers_the_plan_and_records_its_contact_before_travel(
    broker: Broker,
) -> None:
    case = "AT-2026-0203"
    plan = await prepared(broker, case)
    now = datetime.now(UTC)
    ready = {"readiness": "ready"}
    contact = {"at": iso(now - timedelta(hours=1))}

    # Not before it was sent the plan.
    early = await broker.submit(send(SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, ready, case))
    assert assert_problem(early, 409, "workflow-rule")["rule"] == "needs_plan_sent_to_receiving_org"
    assert (await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, plan, case))).is_success

    answered = await broker.submit(send(SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, ready, case))
    assert answered.status_code == 202, answered.text
    met = await broker.submit(send(SHELTER, NG, T.PRE_DEPARTURE_CONTACT, contact, case))
    assert met.status_code == 202, met.text
    seen = await state(broker, case, NG)
    assert (seen["stage"], seen["readiness"]) == ("return_prepared", "ready")
    assert datetime.fromisoformat(seen["pre_departure_contact_at"]) == datetime.fromisoformat(
        contact["at"]
    )

    # Nobody answers or meets the person for the organisation.
    for sender, recipient, rule in [
        (NG, AT, "reception_plan_response_only_by_designated_receiving_org"),
        (AT, NG, "reception_plan_response_only_by_designated_receiving_org"),
        (OTHER_SHELTER, AT, "not_a_party_of_this_case"),
        (OTHER, AT, "not_a_party_of_this_case"),
    ]:
        forged = await broker.submit(
            send(sender, recipient, T.RECEPTION_PLAN_RESPONSE, ready, case)
        )
        assert assert_problem(forged, 409, "workflow-rule")["rule"] == rule
    for sender, recipient, rule in [
        (NG, AT, "pre_departure_contact_only_by_designated_receiving_org"),
        (OTHER_SHELTER, NG, "not_a_party_of_this_case"),
    ]:
        forged = await broker.submit(
            send(sender, recipient, T.PRE_DEPARTURE_CONTACT, contact, case)
        )
        assert assert_problem(forged, 409, "workflow-rule")["rule"] == rule
    future = {"at": iso(now + timedelta(hours=1))}
    ahead = await broker.submit(send(SHELTER, NG, T.PRE_DEPARTURE_CONTACT, future, case))
    assert assert_problem(ahead, 409, "workflow-rule")["rule"] == "pre_departure_contact_in_future"

    # Then the person arrives; answers come before travel only.
    reception = {"outcome": "received", "at": iso(datetime.now(UTC))}
    assert (
        await broker.submit(send(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case))
    ).is_success
    late = await broker.submit(send(SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, ready, case))
    assert assert_problem(late, 409, "workflow-rule")["rule"] == "needs_plan_sent_to_receiving_org"


async def test_cannot_receive_keeps_the_plan_until_the_sending_focal_point_makes_another(
    broker: Broker,
) -> None:
    case = "AT-2026-0204"
    plan = await prepared(broker, case)
    assert (await broker.submit(send(AT, SHELTER, T.RETURN_PREPARATION, plan, case))).is_success
    cannot = {"readiness": "cannot_receive"}
    answered = await broker.submit(send(SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, cannot, case))
    assert answered.status_code == 202, answered.text
    seen = await state(broker, case)
    assert (seen["stage"], seen["receiving_org"], seen["readiness"]) == (
        "return_prepared",
        SHELTER.participant,
        "cannot_receive",
    )
    # A new plan names another organisation: it is sent the plan, the first is out.
    other = {**plan, "receiving_org": OTHER_SHELTER.participant}
    assert (await broker.submit(send(AT, NG, T.RETURN_PREPARATION, other, case))).is_success
    seen = await state(broker, case)
    assert (seen["receiving_org"], seen["plan_sent_to_org"], seen["readiness"]) == (
        OTHER_SHELTER.participant,
        None,
        None,
    )
    sent = await broker.submit(send(AT, OTHER_SHELTER, T.RETURN_PREPARATION, other, case))
    assert sent.status_code == 202, sent.text
    ready = {"readiness": "ready"}
    old = await broker.submit(send(SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, ready, case))
    assert assert_problem(old, 409, "workflow-rule")["rule"] == "not_a_party_of_this_case"
    assert (
        await broker.submit(send(OTHER_SHELTER, AT, T.RECEPTION_PLAN_RESPONSE, ready, case))
    ).is_success

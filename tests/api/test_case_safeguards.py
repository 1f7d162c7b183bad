"""The safeguards that rest on acknowledged facts, through the broker's API (issue 17): a fact
that permits a return counts once the recipient's node acknowledged its message, and never if
it rejected it; the children's rules on every message of a child's case; a best-interests
determination against return; a case closed after withdrawal; a header its payload
contradicts, answered as a finding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.support import PROBLEM, Broker, broker_settings, envelope, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.delivery import outcomes
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store import cases, messages
from trm_broker.store.models import LedgerEntry

AT = KeySet.generate("at.focal-point")  # sending focal point (country of exploitation)
NG = KeySet.generate("ng.naptip")  # destination focal point (country of return)
SHELTER = KeySet.generate("ng.shelter")  # receiving organisation in Nigeria
AUDITOR = KeySet.generate("at.rapporteur")
T = MessageType
MISMATCH = "header-payload-mismatch"


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


async def consent(broker: Broker, case: str, name: str, given_by: str = "person") -> str:
    consent_id = f"{name}-{case}"
    body = {
        "id": consent_id,
        "case_ref": case,
        "given_by": given_by,
        "purposes": [t.value for t in MessageType],
        "recipients": [NG.participant, SHELTER.participant, AT.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "E" * 43,
    }
    response = await broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text
    return consent_id


def message(
    sender: KeySet,
    recipient: KeySet,
    kind: MessageType,
    header: dict[str, Any],
    case: str,
    consent_ref: str | None,
    categories: list[DataCategory] | None = None,
) -> dict[str, str]:
    return envelope(
        sender,
        recipient,
        kind,
        header,
        case_ref=case,
        consent_ref=consent_ref,
        data_categories=categories,
    )


def assessment(recommended: bool = True) -> dict[str, Any]:
    return {
        "risk_level": "low" if recommended else "high",
        "return_recommended": recommended,
        "assessed_at": datetime.now(UTC).isoformat(),
    }


def plan(**changes: Any) -> dict[str, Any]:
    arrival = datetime.now(UTC) + timedelta(days=5)
    return {"receiving_org": SHELTER.participant, "planned_arrival": arrival.isoformat(), **changes}


async def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message_id"]
    return message_id


def refused(response: httpx.Response, status: int, rule: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["rule"] == rule, body
    return body


async def open_case(broker: Broker, case: str, *, minor: bool = False) -> str:
    """Referred and accepted, both acknowledged; under a person's (or a guardian's) consent."""
    consent_ref = await consent(broker, case, "consent", "guardian" if minor else "person")
    header = {"destination_country": "NG", "subject_is_minor": minor}
    for sent in (
        message(AT, NG, T.REFERRAL, header, case, consent_ref, [DataCategory.IDENTITY]),
        message(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case, consent_ref),
    ):
        await accepted(await broker.submit(sent))
        await broker.acknowledge(sent)
    return consent_ref


async def timeline(broker: Broker, case: str, reader: KeySet = AT) -> dict[str, dict[str, Any]]:
    view = await broker.call("GET", f"/v1/cases/{case}", reader)
    assert view.status_code == 200, view.text
    return {item["message_id"]: item for item in view.json()["timeline"]}


async def test_a_return_waits_for_the_risk_assessment_to_be_acknowledged(broker: Broker) -> None:
    case = "AT-2026-0201"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    assessment_id = await accepted(await broker.submit(assessed))
    # The parties see it is not yet answered, so they know to wait for it.
    item = (await timeline(broker, case, NG))[assessment_id]
    assert (item["delivery_status"], item["answered_at"]) == ("pending", None)

    early = await broker.submit(message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref))
    body = refused(early, 409, "risk_assessment_not_yet_acknowledged")
    assert "not yet acknowledged by its recipient; wait for it" in body["detail"]

    await broker.acknowledge(assessed)  # AT's node stored and acknowledged it
    item = (await timeline(broker, case))[assessment_id]
    assert item["delivery_status"] == "acknowledged"
    assert item["answered_at"] is not None
    again = message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)
    await accepted(await broker.submit(again))
    view = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()
    assert view["stage"] == "return_prepared"
    assert view["state"]["last_risk_assessment"]["message_id"] == assessment_id


async def test_only_the_recipient_can_make_a_risk_assessment_count(broker: Broker) -> None:
    case = "AT-2026-0202"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    assessment_id = await accepted(await broker.submit(assessed))
    # Its sender signs, with its own key, the acknowledgement its recipient would give.
    claims = {
        "v": 1,
        "message_id": assessment_id,
        "envelope_digest": jws.digest(assessed),
        "recipient": AT.participant,
        "received_at": "2026-12-06T10:00:00.000Z",
        "status": "received",
    }
    forged = {"ack": jws.sign(claims, NG.signing, jws.TYP_ACK)}
    path = f"/v1/inbox/{assessment_id}/ack"
    by_sender = await broker.call("POST", path, NG, json=forged)
    assert by_sender.status_code == 404, by_sender.text  # not addressed to it
    # Even relayed by the recipient itself, an answer counts only under the recipient's key.
    relayed = await broker.call("POST", path, AT, json=forged)
    assert relayed.status_code == 422, relayed.text
    assert (await timeline(broker, case))[assessment_id]["delivery_status"] == "pending"
    refused(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)),
        409,
        "risk_assessment_not_yet_acknowledged",
    )


async def test_after_a_rejected_risk_assessment_the_return_is_refused(broker: Broker) -> None:
    case = "AT-2026-0203"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    assessment_id = await accepted(await broker.submit(assessed))
    answer = await broker.answer(assessed, status="rejected", code="payload-invalid")
    assert answer.json()["status"] == "rejected"
    assert (await timeline(broker, case))[assessment_id]["delivery_status"] == "rejected"
    body = refused(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)),
        409,
        "return_preparation_needs_recent_recommending_risk_assessment",
    )
    assert "(there is none)" in body["detail"]
    assert body["window_seconds"] == 30 * 86400  # the risk assessment's greatest age
    # A payload that does not conform is not a finding: no alert.
    assert (await broker.call("GET", "/v1/alerts", AUDITOR)).json()["alerts"] == []


async def test_a_rejected_return_plan_takes_the_case_back_for_a_corrected_one(
    broker: Broker,
) -> None:
    case = "AT-2026-0204"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    await accepted(await broker.submit(assessed))
    await broker.acknowledge(assessed)
    first = message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)
    await accepted(await broker.submit(first))
    await broker.answer(first, status="rejected", code=MISMATCH)
    view = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()
    assert (view["stage"], view["state"]["receiving_org"]) == ("accepted", None)
    # The organisation of the rejected plan confirms nothing; a corrected plan goes through.
    reception = {"outcome": "received", "at": datetime.now(UTC).isoformat()}
    refused(
        await broker.submit(
            message(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case, consent_ref)
        ),
        409,
        "not_a_party_of_this_case",
    )
    corrected = message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)
    await accepted(await broker.submit(corrected))


async def test_a_rejected_referral_is_sent_again_corrected_on_the_same_case(
    broker: Broker,
) -> None:
    case = "AT-2026-0205"
    consent_ref = await consent(broker, case, "consent")
    header = {"destination_country": "NG", "subject_is_minor": False}
    first = message(AT, NG, T.REFERRAL, header, case, consent_ref, [DataCategory.IDENTITY])
    await accepted(await broker.submit(first))
    await broker.answer(first, status="rejected", code=MISMATCH)
    refused(
        await broker.submit(
            message(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case, consent_ref)
        ),
        409,
        "referral_rejected_by_recipient",
    )
    corrected = message(AT, NG, T.REFERRAL, header, case, consent_ref, [DataCategory.IDENTITY])
    await accepted(await broker.submit(corrected))
    response = message(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case, consent_ref)
    await accepted(await broker.submit(response))


async def test_a_child_is_protected_on_every_message_of_the_case(broker: Broker) -> None:
    case = "AT-2026-0206"
    await open_case(broker, case, minor=True)
    # The child's own consent, registered beside the guardian's, covers nothing of the case.
    own = await consent(broker, case, "childs-own")
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, own)
    body = refused(await broker.submit(assessed), 409, "minor_needs_guardian_consent")
    assert "risk_assessment for a child needs a consent given by a guardian" in body["detail"]


async def test_after_a_guardians_withdrawal_the_childs_consent_covers_nothing(
    broker: Broker,
) -> None:
    case = "AT-2026-0207"
    guardians = await open_case(broker, case, minor=True)
    withdrawn = await broker.call("POST", f"/v1/consents/{guardians}/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text
    own = await consent(broker, case, "childs-own")
    for kind, header in [
        (T.RISK_ASSESSMENT, assessment()),
        (T.CASE_CLOSURE, {"reason": "consent_withdrawn"}),  # carrying notes: needs a consent
    ]:
        refused(
            await broker.submit(message(AT, NG, kind, header, case, own)),
            409,
            "minor_needs_guardian_consent",
        )
    # Closed without personal data, the case needs no consent at all.
    closure = message(AT, NG, T.CASE_CLOSURE, {"reason": "consent_withdrawn"}, case, None, [])
    await accepted(await broker.submit(closure))
    assert (await broker.call("GET", f"/v1/cases/{case}", NG)).json()["stage"] == "closed"


async def test_a_best_interests_determination_against_return_blocks_it(broker: Broker) -> None:
    case = "AT-2026-0208"
    guardians = await open_case(broker, case, minor=True)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, guardians)
    await accepted(await broker.submit(assessed))
    await broker.acknowledge(assessed)
    child = {"subject_is_minor": True, "best_interests_ref": "bid-2026-7"}
    against = plan(**child, best_interests_outcome="return_not_in_best_interests")
    body = refused(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, against, case, guardians)),
        409,
        "best_interests_do_not_support_return",
    )
    assert "not in the child's best interests" in body["detail"]
    undetermined = plan(best_interests_ref="bid-2026-7")  # no outcome
    refused(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, undetermined, case, guardians)),
        409,
        "minor_needs_best_interests_determination",
    )
    supports = plan(**child, best_interests_outcome="return_in_best_interests")
    await accepted(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, supports, case, guardians))
    )


async def test_a_case_is_closed_after_withdrawal_but_carries_no_data_then(
    broker: Broker,
) -> None:
    case = "AT-2026-0209"
    consent_ref = await open_case(broker, case)
    withdrawn = await broker.call("POST", f"/v1/consents/{consent_ref}/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text
    reason = {"reason": "consent_withdrawn"}
    with_notes = message(AT, NG, T.CASE_CLOSURE, reason, case, consent_ref)
    body = refused(await broker.submit(with_notes), 403, "consent_scope")
    assert body["gaps"] == ["withdrawn"]
    closure = message(AT, NG, T.CASE_CLOSURE, reason, case, consent_ref, [])
    closure_id = await accepted(await broker.submit(closure))
    assert (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["stage"] == "closed"
    assert (await timeline(broker, case))[closure_id]["delivery_status"] == "pending"


async def test_a_header_its_payload_contradicts_is_a_finding(broker: Broker) -> None:
    case = "AT-2026-0210"
    consent_ref = await open_case(broker, case)
    assessed = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    assessment_id = await accepted(await broker.submit(assessed))
    reasons = ["header/return_recommended: not what the payload says"]
    answer = await broker.answer(assessed, status="rejected", reasons=reasons, code=MISMATCH)
    assert answer.status_code == 200, answer.text
    # The sender and the recipient are alerted; the auditors see it too.
    for reader in (NG, AT, AUDITOR):
        alerts = (await broker.call("GET", "/v1/alerts", reader)).json()["alerts"]
        assert [(a["kind"], a["case_ref"], a["parties"]) for a in alerts] == [
            ("header_payload_mismatch", case, [NG.participant, AT.participant])
        ]
    async with broker.app.state.broker.sessions() as session:
        entries = [
            json.loads(row.body)
            for row in await session.scalars(
                select(LedgerEntry).where(LedgerEntry.case_ref == case).order_by(LedgerEntry.seq)
            )
        ]
    rejected = [e for e in entries if e["type"] == EventType.MESSAGE_REJECTED]
    assert [(e["message_id"], e["code"]) for e in rejected] == [(assessment_id, MISMATCH)]
    assert "header/return_recommended" not in json.dumps(entries)  # reasons stay out
    raised = [e for e in entries if e["type"] == EventType.ALERT_RAISED]
    assert [(e["alert"], e["parties"], e["countries"]) for e in raised] == [
        ("header_payload_mismatch", [NG.participant, AT.participant], ["AT", "NG"])
    ]
    # ... and what the lie was meant to permit is refused.
    refused(
        await broker.submit(message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref)),
        409,
        "return_preparation_needs_recent_recommending_risk_assessment",
    )


async def test_an_answer_is_applied_to_the_case_as_it_is_when_recorded(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case changed between the answer's read and its write (a message accepted in it
    meanwhile): the answer is applied to the new state, and nothing accepted is lost."""
    case = "AT-2026-0211"
    consent_ref = await open_case(broker, case)
    first = message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)
    first_id = await accepted(await broker.submit(first))
    sessions = broker.app.state.broker.sessions
    async with sessions() as session:
        stale = await cases.read(session, case)  # read before the next message is accepted
        assert stale is not None
        reads: list[str] = []
        read = cases.read

        async def first_read_stale(session: AsyncSession, case_ref: str) -> cases.StoredCase | None:
            reads.append(case_ref)
            return stale if len(reads) == 1 else await read(session, case_ref)

        monkeypatch.setattr(cases, "read", first_read_stale)
        second = message(AT, NG, T.RISK_ASSESSMENT, assessment(False), case, consent_ref)
        second_id = await accepted(await broker.submit(second))  # another transaction
        delivery = await messages.delivery_of(session, first_id)
        assert delivery is not None
        signed = broker.signed_answer(first)
        claims = AckClaims.model_validate(jws.parse(signed, jws.TYP_ACK).claims())
        now = datetime.now(UTC)
        assert await outcomes.record_answer(session, delivery.id, first_id, signed, claims, 1, now)
        await session.commit()
    assert reads == [case, case]  # the stale state was refused, the case read again
    state = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["state"]
    assert state["last_risk_assessment"]["message_id"] == first_id
    assert [p["message_id"] for p in state["pending_risk_assessments"]] == [second_id]


async def received_case(broker: Broker, case: str) -> tuple[str, dict[str, str]]:
    """A case whose return plan is acknowledged, and the shelter's reception confirmation
    accepted (not yet answered): its consent and the confirmation."""
    consent_ref = await open_case(broker, case)
    for sent in (
        message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref),
        message(AT, NG, T.RETURN_PREPARATION, plan(), case, consent_ref),
    ):
        await accepted(await broker.submit(sent))
        await broker.acknowledge(sent)
    reception = {"outcome": "received", "at": datetime.now(UTC).isoformat()}
    confirmed = message(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case, consent_ref)
    await accepted(await broker.submit(confirmed))
    return consent_ref, confirmed


async def test_a_rejected_reception_confirmation_counts_for_nothing(broker: Broker) -> None:
    """A reception its recipient's node rejected (a header saying "received" over a payload
    saying the person did not arrive) neither moves the case to monitoring nor stops the
    reception deadline: the case waits for a reception confirmation again."""
    case = "AT-2026-0212"
    consent_ref, confirmed = await received_case(broker, case)
    assert (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["stage"] == "received"
    await broker.answer(confirmed, status="rejected", code=MISMATCH)
    view = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()
    assert (view["stage"], view["state"]["received_at"]) == ("return_prepared", None)
    assert [d["name"] for d in view["deadlines"]] == ["reception_due"]
    monitoring = {"period_start": "2026-12-01", "period_end": "2026-12-06"}
    refused(
        await broker.submit(message(SHELTER, AT, T.CASE_MONITORING, monitoring, case, consent_ref)),
        409,
        "case_monitoring_needs_reception",
    )
    honest = {"outcome": "not_arrived", "at": datetime.now(UTC).isoformat()}
    again = message(SHELTER, NG, T.RECEPTION_CONFIRMATION, honest, case, consent_ref)
    await accepted(await broker.submit(again))
    assert (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["stage"] == "not_received"


async def test_a_rejected_monitoring_report_does_not_reset_the_monitoring_deadline(
    broker: Broker,
) -> None:
    case = "AT-2026-0213"
    consent_ref, confirmed = await received_case(broker, case)
    await broker.acknowledge(confirmed)
    before = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["deadlines"]
    monitoring = {"period_start": "2026-12-01", "period_end": "2026-12-06"}
    report = message(SHELTER, AT, T.CASE_MONITORING, monitoring, case, consent_ref)
    await accepted(await broker.submit(report))
    moved = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()
    assert moved["state"]["last_monitoring_at"] is not None
    await broker.answer(report, status="rejected", code=MISMATCH)
    view = (await broker.call("GET", f"/v1/cases/{case}", AT)).json()
    assert view["state"]["last_monitoring_at"] is None
    assert view["deadlines"] == before


async def test_a_rejected_referral_response_is_answered_again(broker: Broker) -> None:
    """An acceptance its recipient's node rejected (a header saying "accepted" over a payload
    declining the case) permits nothing: the case waits for the destination's answer."""
    case = "AT-2026-0214"
    consent_ref = await consent(broker, case, "consent")
    header = {"destination_country": "NG", "subject_is_minor": False}
    referral = message(AT, NG, T.REFERRAL, header, case, consent_ref, [DataCategory.IDENTITY])
    await accepted(await broker.submit(referral))
    await broker.acknowledge(referral)
    answer = message(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case, consent_ref)
    await accepted(await broker.submit(answer))
    await broker.answer(answer, status="rejected", code=MISMATCH)
    assert (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["stage"] == "referred"
    refused(
        await broker.submit(message(NG, AT, T.RISK_ASSESSMENT, assessment(), case, consent_ref)),
        409,
        "risk_assessment_needs_acceptance",
    )
    declined = message(NG, AT, T.REFERRAL_RESPONSE, {"accepted": False}, case, consent_ref)
    await accepted(await broker.submit(declined))
    assert (await broker.call("GET", f"/v1/cases/{case}", AT)).json()["stage"] == "declined"

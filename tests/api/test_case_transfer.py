"""A whole case transfer through the broker's API: consent gates every message, the
workflow and return safeguards hold, withdrawal stops everything, alerts are raised and
closed, and parties (only) read the case."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.support import PROBLEM, Broker, broker_settings, envelope, referral, running_broker
from trm_broker.background.alert_scheduler import AlertScheduler
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.store.models import Delivery, LedgerEntry, Message

AT = KeySet.generate("at.focal-point")  # sending focal point (country of exploitation)
NG = KeySet.generate("ng.naptip")  # destination focal point (country of return)
SHELTER = KeySet.generate("ng.shelter")  # receiving organisation in Nigeria
OTHER = KeySet.generate("fr.focal-point")
AUDITOR = KeySet.generate("at.rapporteur")
T = MessageType


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, report_min_cell=1)
    async with running_broker(settings) as b:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
            (OTHER, "FR", "focal_point"),
            (AUDITOR, "AT", "auditor"),
        ]:
            inbox = f"https://{keyset.participant}.example/inbox"
            response = await b.register(keyset, country, kind=kind, inbox_url=inbox)
            assert response.status_code == 201, response.text
        yield b


def consent_body(case_ref: str, **overrides: Any) -> dict[str, Any]:
    return {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": [NG.participant, SHELTER.participant, AT.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "B" * 43,
        **overrides,
    }


async def register_consent(broker: Broker, case_ref: str, **overrides: Any) -> httpx.Response:
    return await broker.call("POST", "/v1/consents", AT, json=consent_body(case_ref, **overrides))


def send(
    sender: KeySet, recipient: KeySet, kind: MessageType, header: dict[str, Any], case: str
) -> dict[str, str]:
    return envelope(sender, recipient, kind, header, case_ref=case, consent_ref=f"consent-{case}")


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:trm-broker:problem:{slug}"
    return body


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def referred_and_accepted(broker: Broker, case: str) -> None:
    assert (await register_consent(broker, case)).status_code == 201
    assert (await broker.submit(referral(AT, NG, case_ref=case))).status_code == 202
    accepted = send(NG, AT, T.REFERRAL_RESPONSE, {"accepted": True}, case)
    assert (await broker.submit(accepted)).status_code == 202


async def test_a_whole_case_goes_through_and_its_parties_read_its_timeline(
    broker: Broker,
) -> None:
    case, now = "AT-2026-0100", datetime.now(UTC)
    await referred_and_accepted(broker, case)
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    assessed = send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    assert (await broker.submit(assessed)).status_code == 202
    await broker.acknowledge(assessed)  # AT's node stored it: now it counts
    arrival = now + timedelta(days=5)
    preparation = {"receiving_org": SHELTER.participant, "planned_arrival": iso(arrival)}
    assert (
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case))
    ).status_code == 202
    reception = {"outcome": "received", "at": iso(now)}
    assert (
        await broker.submit(send(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case))
    ).status_code == 202
    period = {"period_start": now.date().isoformat(), "period_end": now.date().isoformat()}
    assert (
        await broker.submit(send(SHELTER, NG, T.CASE_MONITORING, period, case))
    ).status_code == 202
    closure = {"reason": "reintegrated"}
    assert (await broker.submit(send(AT, NG, T.CASE_CLOSURE, closure, case))).status_code == 202

    for party in (AT, NG, SHELTER):
        view = await broker.call("GET", f"/v1/cases/{case}", party)
        assert view.status_code == 200, view.text
        body = view.json()
        assert body["stage"] == "closed"
        assert [item["type"] for item in body["timeline"]] == [
            "referral",
            "referral_response",
            "risk_assessment",
            "return_preparation",
            "reception_confirmation",
            "case_monitoring",
            "case_closure",
        ]
    for stranger in (OTHER, AUDITOR):
        assert_problem(await broker.call("GET", f"/v1/cases/{case}", stranger), 404, "not-found")

    # The auditors' report (k = 1 here) times the case from referral to reception.
    since = (now - timedelta(days=1)).isoformat()
    until = (now + timedelta(days=1)).isoformat()
    query = f"/v1/audit/report?from={since}&to={until}".replace("+", "%2B")
    report = await broker.call("GET", query, AUDITOR)
    assert report.status_code == 200, report.text
    timing = report.json()["referral_to_reception"]
    assert timing["cases"] == 1
    assert 0 <= timing["median_hours"] < 1


async def test_a_message_without_a_covering_consent_is_refused_naming_the_gap(
    broker: Broker,
) -> None:
    no_consent = await broker.submit(referral(AT, NG, consent_ref=None))
    assert_problem(no_consent, 403, "consent-refused")

    case = "AT-2026-0101"
    narrow = {"purposes": ["referral"], "data_categories": ["identity"]}
    assert (await register_consent(broker, case, **narrow)).status_code == 201
    assert (await broker.submit(referral(AT, NG, case_ref=case))).status_code == 202
    health = envelope(
        NG,
        AT,
        T.REFERRAL_RESPONSE,
        {"accepted": True},
        case_ref=case,
        consent_ref=f"consent-{case}",
        data_categories=[DataCategory.HEALTH],
    )
    body = assert_problem(await broker.submit(health), 403, "consent-refused")
    assert set(body["gaps"]) == {"purpose", "data_categories"}
    assert "referral_response" in body["detail"]
    assert await broker.stored_counts() == (1, 1)


async def test_return_safeguards_refuse_with_the_rule(broker: Broker) -> None:
    case, now = "AT-2026-0102", datetime.now(UTC)
    await referred_and_accepted(broker, case)
    preparation = {
        "receiving_org": SHELTER.participant,
        "planned_arrival": iso(now + timedelta(days=5)),
    }
    early = await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case))
    body = assert_problem(early, 409, "workflow-rule")
    assert "risk_assessment" in body["detail"]

    against = {"risk_level": "high", "return_recommended": False, "assessed_at": iso(now)}
    assessed = send(NG, AT, T.RISK_ASSESSMENT, against, case)
    assert (await broker.submit(assessed)).status_code == 202
    await broker.acknowledge(assessed)
    assert_problem(
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case)),
        409,
        "workflow-rule",
    )
    recommends = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    assessed = send(NG, AT, T.RISK_ASSESSMENT, recommends, case)
    assert (await broker.submit(assessed)).status_code == 202
    await broker.acknowledge(assessed)
    too_soon = {**preparation, "planned_arrival": iso(now + timedelta(hours=10))}
    assert_problem(
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, too_soon, case)),
        409,
        "workflow-rule",
    )
    not_an_org = {**preparation, "receiving_org": OTHER.participant}
    assert_problem(
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, not_an_org, case)),
        409,
        "workflow-rule",
    )
    assert (
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case))
    ).status_code == 202
    # Only the designated receiving organisation confirms reception.
    reception = {"outcome": "received", "at": iso(now)}
    assert_problem(
        await broker.submit(send(NG, AT, T.RECEPTION_CONFIRMATION, reception, case)),
        409,
        "workflow-rule",
    )


async def test_withdrawal_stops_everything_at_once(broker: Broker) -> None:
    case = "AT-2026-0103"
    await referred_and_accepted(broker, case)
    sessions = broker.app.state.broker.sessions
    async with sessions() as session:
        messages = (await session.scalars(select(Message).where(Message.case_ref == case))).all()
        # The referral reached NG; the response to AT is still on its way.
        delivery = (
            await session.scalars(select(Delivery).where(Delivery.message_id == messages[0].id))
        ).one()
        delivery.status, delivery.acknowledged_at = "acknowledged", datetime.now(UTC)
        await session.commit()

    withdrawn = await broker.call("POST", f"/v1/consents/consent-{case}/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["withdrawn_at"] is not None

    async with sessions() as session:
        stored = (await session.scalars(select(Message).where(Message.case_ref == case))).all()
        states = dict((await session.execute(select(Delivery.message_id, Delivery.status))).all())
    assert all(m.envelope is None and m.purged_at is not None for m in stored)
    assert states[stored[1].id] == "dropped"
    later = send(
        NG,
        AT,
        T.RISK_ASSESSMENT,
        {"risk_level": "low", "return_recommended": True, "assessed_at": iso(datetime.now(UTC))},
        case,
    )
    body = assert_problem(await broker.submit(later), 403, "consent-refused")
    assert "withdrawn" in body["gaps"]
    # NG, who received data under it, is notified; a stranger sees nothing.
    alerts = (await broker.call("GET", "/v1/alerts", NG)).json()["alerts"]
    assert [(a["case_ref"], a["kind"]) for a in alerts] == [(case, "consent_withdrawn")]
    assert (await broker.call("GET", "/v1/alerts", OTHER)).json()["alerts"] == []
    # ... and the notice is in the ledger, as an entry NG is a party of (the withdrawal's own
    # entry names only AT).
    async with sessions() as session:
        raised = (
            await session.scalars(
                select(LedgerEntry).where(
                    LedgerEntry.type == EventType.ALERT_RAISED, LedgerEntry.case_ref == case
                )
            )
        ).all()
    assert [(e.party1, e.party2, json.loads(e.body)["alert"]) for e in raised] == [
        (NG.participant, AT.participant, "consent_withdrawn")
    ]


async def test_a_withdrawal_message_takes_effect_and_still_reaches_its_recipient(
    broker: Broker,
) -> None:
    case = "AT-2026-0104"
    await referred_and_accepted(broker, case)
    withdrawal = send(AT, NG, T.CONSENT_WITHDRAWAL, {}, case)
    response = await broker.submit(withdrawal)
    assert response.status_code == 202, response.text
    status = (await broker.status(response.json()["message_id"], AT)).json()
    assert status["delivery"]["status"] == "pending"
    consent = (await broker.call("GET", f"/v1/consents/consent-{case}", NG)).json()
    assert consent["withdrawn_at"] is not None


async def test_overdue_reception_raises_an_alert_that_closes_when_confirmed(
    broker: Broker,
) -> None:
    case, now = "AT-2026-0105", datetime.now(UTC)
    await referred_and_accepted(broker, case)
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    assessed = send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    assert (await broker.submit(assessed)).status_code == 202
    await broker.acknowledge(assessed)
    arrival = now + timedelta(days=4)
    preparation = {"receiving_org": SHELTER.participant, "planned_arrival": iso(arrival)}
    assert (
        await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case))
    ).status_code == 202
    state = broker.app.state.broker
    scheduler = AlertScheduler(state.sessions, state.rules())
    assert await scheduler.run_once(arrival + timedelta(hours=47)) == (0, 0)
    assert await scheduler.run_once(arrival + timedelta(hours=49)) == (1, 0)
    assert await scheduler.run_once(arrival + timedelta(hours=50)) == (0, 0)  # once
    for party in (AT, NG, SHELTER):
        alerts = (await broker.call("GET", f"/v1/alerts?case_ref={case}", party)).json()
        assert [a["kind"] for a in alerts["alerts"]] == ["reception_overdue"]
    reception = {"outcome": "received", "at": iso(now)}
    assert (
        await broker.submit(send(SHELTER, NG, T.RECEPTION_CONFIRMATION, reception, case))
    ).status_code == 202
    assert await scheduler.run_once(arrival + timedelta(hours=51)) == (0, 1)
    assert (await broker.call("GET", "/v1/alerts", AT)).json()["alerts"] == []


async def test_consents_are_registered_by_focal_points_and_read_by_parties(
    broker: Broker,
) -> None:
    case = "AT-2026-0106"
    assert_problem(
        await broker.call("POST", "/v1/consents", SHELTER, json=consent_body(case)),
        403,
        "forbidden",
    )
    invalid = await register_consent(broker, case, purposes=[], valid_until="2020-01-01T00:00:00Z")
    body = assert_problem(invalid, 400, "invalid-request")
    assert "body/purposes" in [e["location"] for e in body["errors"]]
    assert (await register_consent(broker, case)).status_code == 201
    assert_problem(await register_consent(broker, case), 409, "conflict")
    assert (await broker.call("GET", f"/v1/consents/consent-{case}", NG)).status_code == 200
    assert_problem(
        await broker.call("GET", f"/v1/consents/consent-{case}", OTHER), 404, "not-found"
    )
    assert (await broker.client.get(f"/v1/consents/consent-{case}")).status_code == 401


async def test_the_auditors_report_counts_and_suppresses_small_cells(broker: Broker) -> None:
    case = "AT-2026-0107"
    await referred_and_accepted(broker, case)
    await broker.submit(referral(AT, NG, consent_ref=None))  # a refusal, by rule
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    query = f"/v1/audit/report?from={since}&to={until}".replace("+", "%2B")
    report = (await broker.call("GET", query, AUDITOR)).json()
    counts = {
        (m["type"], m["from_country"], m["to_country"]): m["count"] for m in report["messages"]
    }
    assert counts == {("referral", "AT", "NG"): 1, ("referral_response", "NG", "AT"): 1}
    assert report["refusals"] == [{"rule": "consent_missing", "count": 1, "suppressed": False}]
    assert_problem(await broker.call("GET", query, AT), 403, "forbidden")
    csv_text = (await broker.call("GET", query + "&format=csv", AUDITOR)).text
    assert "messages,referral AT->NG,1,False" in csv_text

    # With the default k = 11, those cells are too small to show.
    broker.app.state.broker.settings.report_min_cell = 11
    suppressed = (await broker.call("GET", query, AUDITOR)).json()
    assert all(m["suppressed"] and m["count"] is None for m in suppressed["messages"])
    assert suppressed["refusals"][0]["count"] is None

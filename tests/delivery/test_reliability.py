"""Per-case order, dead letters after the maximum age, operators' re-queue, and a stopping
dispatcher handing back what it claimed: through the broker's API, with real signatures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, update

from tests.api.test_case_transfer import consent_body
from tests.support import PROBLEM, Broker, broker_settings, envelope, referral, running_broker
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.domain.messages import MessageType
from trm_broker.store import deliveries as outbox
from trm_broker.store.models import Delivery, LedgerEntry

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
T = MessageType


@pytest.fixture
async def broker(database_url: str, tmp_path: Path) -> AsyncIterator[Broker]:
    settings = broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    async with running_broker(settings) as b:
        assert (await b.register(AT, "AT", inbox_url="http://127.0.0.1:9/at")).status_code == 201
        assert (await b.register(NG, "NG", inbox_url="http://127.0.0.1:9/ng")).status_code == 201
        yield b


class Inbox:
    """NG's and AT's inboxes, in the test: each answers with its participant's real signed
    ack unless told to fail a message; records the order NG's messages arrived in."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.arrived: list[str] = []
        app = FastAPI()

        @app.post("/{name}")
        async def inbox(name: str, request: Request) -> JSONResponse:
            recipient = {"ng": NG, "at": AT}[name]
            envelope = (await request.json())["envelope"]
            claims = jws.parse(envelope, jws.TYP_ENVELOPE).claims()
            if recipient is NG:
                self.arrived.append(claims["id"])
            if claims["id"] in self.failing:
                return JSONResponse({"detail": "down"}, status_code=503)
            ack = {
                "v": 1,
                "message_id": claims["id"],
                "envelope_digest": jws.digest(envelope),
                "recipient": recipient.participant,
                "received_at": "2026-11-23T00:00:00.000Z",
                "status": "received",
            }
            return JSONResponse({"ack": jws.sign(ack, recipient.signing, jws.TYP_ACK)})

        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


def dispatcher(broker: Broker, inbox: Inbox, *, max_age: float = 3600) -> DeliveryDispatcher:
    return DeliveryDispatcher(
        broker.app.state.broker.sessions,
        inbox.http,
        timeout=30,  # a push's deadline: room for a loaded machine
        poll_interval=0.1,
        backoff_cap=0.01,
        max_age=max_age,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=broker.app.state.broker.signing_key,
    )


async def due_now(broker: Broker) -> None:
    async with broker.app.state.broker.sessions() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.status == "pending")
            .values(next_attempt_at=datetime.now(UTC))
        )
        await session.commit()


async def case_to_ng(broker: Broker, case: str, assessments: int) -> list[str]:
    """A case whose messages to NG are a referral and then risk assessments; their ids in
    acceptance order."""
    assert (await broker.call("POST", "/v1/consents", AT, json=consent_body(case))).is_success
    sent = [(await broker.submit(referral(AT, NG, case_ref=case))).json()["message_id"]]
    answer = envelope(
        NG,
        AT,
        T.REFERRAL_RESPONSE,
        {"accepted": True},
        case_ref=case,
        consent_ref=f"consent-{case}",
    )
    assert (await broker.submit(answer)).status_code == 202
    for _ in range(assessments):
        header = {
            "risk_level": "low",
            "return_recommended": True,
            "assessed_at": datetime.now(UTC).isoformat(),
        }
        signed = envelope(
            AT, NG, T.RISK_ASSESSMENT, header, case_ref=case, consent_ref=f"consent-{case}"
        )
        response = await broker.submit(signed)
        assert response.status_code == 202, response.text
        sent.append(response.json()["message_id"])
    return sent


async def status(broker: Broker, message_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await broker.status(message_id, AT)).json()
    return body


async def ledger_types(broker: Broker, message_id: str) -> list[str]:
    async with broker.app.state.broker.sessions() as session:
        bodies = (await session.scalars(select(LedgerEntry.body).order_by(LedgerEntry.seq))).all()
    return [json.loads(b)["type"] for b in bodies if json.loads(b).get("message_id") == message_id]


async def test_a_case_reaches_its_recipient_in_acceptance_order_while_others_go_on(
    broker: Broker,
) -> None:
    inbox = Inbox()
    first_case = await case_to_ng(broker, "AT-ORDER-1", assessments=2)
    other_case = await case_to_ng(broker, "AT-ORDER-2", assessments=1)
    inbox.failing.add(first_case[0])
    worker = dispatcher(broker, inbox)

    # The first case's referral fails: its later messages wait; the other case goes on.
    while await worker.run_once():
        await due_now(broker)
        if len(inbox.arrived) > 20:
            break
    assert set(inbox.arrived) == {first_case[0], *other_case}
    assert [m for m in inbox.arrived if m in other_case] == other_case
    for waiting in first_case[1:]:
        assert (await status(broker, waiting))["delivery"]["attempts"] == 0

    # Once it goes through, the rest follow in the order they were accepted.
    inbox.failing.clear()
    inbox.arrived.clear()
    await due_now(broker)
    while await worker.run_once():
        pass
    assert inbox.arrived == first_case
    for message_id in first_case + other_case:
        assert (await status(broker, message_id))["status"] == "acknowledged"


async def test_too_old_becomes_a_dead_letter_with_an_alert_and_an_operator_requeues_it(
    broker: Broker,
) -> None:
    inbox = Inbox()
    case = await case_to_ng(broker, "AT-DEAD-1", assessments=1)
    referral_id, assessment_id = case
    inbox.failing.add(referral_id)
    worker = dispatcher(broker, inbox, max_age=3600)
    assert await worker.run_once() == 2  # the referral (fails) and the answer to AT
    assert (await status(broker, referral_id))["delivery"]["last_error"] == "http_503"

    # Past the maximum age: both are dead letters, the one never tried as well (it waited).
    later = datetime.now(UTC) + timedelta(hours=2)
    await due_now(broker)
    assert await worker.sweep(later) == 2
    for message_id, error in ((referral_id, "http_503"), (assessment_id, None)):
        body = await status(broker, message_id)
        assert body["status"] == "dead_lettered"
        assert body["delivery"]["dead_lettered_at"] is not None
        assert body["delivery"]["last_error"] == error
        assert "message.dead_lettered" in await ledger_types(broker, message_id)
    assert await worker.run_once() == 0  # a dead letter is not pushed

    # Both parties see one alert for the case.
    for party in (AT, NG):
        alerts = (await broker.call("GET", "/v1/alerts", party)).json()["alerts"]
        assert [(a["case_ref"], a["kind"]) for a in alerts] == [
            ("AT-DEAD-1", "delivery_dead_lettered")
        ]

    # The operator lists them (metadata only) and re-queues them, oldest first.
    listed = await broker.call("GET", "/v1/deliveries?status=dead_lettered", broker.operator)
    assert listed.status_code == 200, listed.text
    rows = listed.json()["dead_letters"]
    assert [r["message_id"] for r in rows] == case
    assert "case_ref" not in rows[0]
    for message_id in case:
        requeued = await broker.call(
            "POST", f"/v1/deliveries/{message_id}/requeue", broker.operator
        )
        assert requeued.status_code == 200, requeued.text
        assert "message.requeued" in await ledger_types(broker, message_id)
    again = await broker.call("POST", f"/v1/deliveries/{referral_id}/requeue", broker.operator)
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM

    inbox.failing.clear()
    inbox.arrived.clear()
    while await worker.run_once():
        pass
    assert inbox.arrived == case
    assert (await status(broker, assessment_id))["status"] == "acknowledged"
    alerts = (await broker.call("GET", "/v1/alerts", AT)).json()["alerts"]
    assert alerts == []  # closed once nothing in the case is dead-lettered


async def test_only_an_operator_lists_or_requeues_dead_letters(broker: Broker) -> None:
    for party in (AT, NG):
        listed = await broker.call("GET", "/v1/deliveries", party)
        assert listed.status_code == 403
        requeue = await broker.call("POST", "/v1/deliveries/x/requeue", party)
        assert requeue.status_code == 403
    missing = await broker.call("POST", "/v1/deliveries/nothing/requeue", broker.operator)
    assert missing.status_code == 404


async def test_a_stopping_dispatcher_hands_back_what_it_claimed(broker: Broker) -> None:
    inbox = Inbox()
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    worker = dispatcher(broker, inbox)
    worker.stop()
    assert await worker.run_once() == 0
    assert inbox.arrived == []
    async with broker.app.state.broker.sessions() as session:
        row = (await session.scalars(select(Delivery))).one()
    assert (row.status, row.attempts) == ("pending", 0)
    assert row.next_attempt_at <= datetime.now(UTC)  # due at once, not after a lease
    fresh = dispatcher(broker, inbox)
    assert await fresh.run_once() == 1
    assert (await status(broker, message_id))["status"] == "acknowledged"


async def test_on_sqlite_the_dispatcher_takes_over_what_a_killed_one_had_leased(
    broker: Broker, backend: str
) -> None:
    inbox = Inbox()
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    leased_until = datetime.now(UTC) + timedelta(minutes=5)
    async with broker.app.state.broker.sessions() as session:  # as a dispatcher that died
        await session.execute(update(Delivery).values(next_attempt_at=leased_until))
        await session.commit()
    assert await dispatcher(broker, inbox).run_once() == 0  # leased: not due
    started = DeliveryDispatcher(
        broker.app.state.broker.sessions,
        inbox.http,
        timeout=30,  # a push's deadline: room for a loaded machine
        poll_interval=0.1,
        backoff_cap=0.01,
        policy=InboxPolicy(allow_loopback=True),
        signing_key=broker.app.state.broker.signing_key,
        release_on_start=True,
    )
    assert await started.run_once() == 1
    assert (await status(broker, message_id))["status"] == "acknowledged"


async def test_a_consent_withdrawal_drops_dead_letters_and_closes_their_alert(
    broker: Broker,
) -> None:
    inbox = Inbox()
    referral_id, _ = await case_to_ng(broker, "AT-DEAD-2", assessments=1)
    inbox.failing.add(referral_id)
    worker = dispatcher(broker, inbox)
    await worker.run_once()
    await due_now(broker)
    assert await worker.sweep(datetime.now(UTC) + timedelta(days=30)) == 2
    assert (await broker.call("GET", "/v1/alerts", AT)).json()["alerts"] != []

    withdrawn = await broker.call("POST", "/v1/consents/consent-AT-DEAD-2/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text
    assert (await status(broker, referral_id))["status"] == "dropped"
    for party in (AT, NG):
        alerts = (await broker.call("GET", "/v1/alerts", party)).json()["alerts"]
        assert "delivery_dead_lettered" not in {a["kind"] for a in alerts}
    requeue = await broker.call("POST", f"/v1/deliveries/{referral_id}/requeue", broker.operator)
    assert requeue.status_code == 409  # dropped for good


async def test_a_push_cut_short_by_a_crash_still_counts_as_an_attempt(broker: Broker) -> None:
    message_id = (await broker.submit(referral(AT, NG))).json()["message_id"]
    now = datetime.now(UTC)
    async with broker.app.state.broker.sessions() as session:  # a dispatcher that then died
        claimed = await outbox.claim_due(session, now, now + timedelta(seconds=1), 10)
        await session.commit()
    assert [c.message_id for c in claimed] == [message_id]
    body = await status(broker, message_id)
    assert (body["status"], body["delivery"]["attempts"]) == ("accepted", 1)

    inbox = Inbox()
    await due_now(broker)  # its lease ran out
    assert await dispatcher(broker, inbox).run_once() == 1
    body = await status(broker, message_id)
    assert (body["status"], body["delivery"]["attempts"]) == ("acknowledged", 2)

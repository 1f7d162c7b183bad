"""The dispatcher ends a delivery only on the recipient's valid signed answer: an ack
(delivered) or a rejection of the payload (final, never retried)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select, update

from tests.support import Broker, broker_settings, referral, running_broker, running_node
from trm_broker.background.dispatcher import DeliveryDispatcher
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet, SigningKey
from trm_broker.domain.inbox_url import InboxPolicy
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import Delivery, LedgerEntry
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
INBOX = "http://127.0.0.1:9/inbox"  # the ASGI transports below never dial it
#: A referral the node takes: its header is what the payload says.
PAYLOAD = {"destination_country": "NG", "languages": ["en"], "is_child": False}


@dataclass
class World:
    broker: Broker
    dispatcher_for: Callable[..., DeliveryDispatcher]


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_broker(
        broker_settings(database_url, tmp_path, allow_loopback_inboxes=True)
    ) as broker:
        assert (
            await broker.register(AT, "AT", inbox_url="http://127.0.0.1:9/at-inbox")
        ).status_code == 201
        assert (await broker.register(NG, "NG", inbox_url=INBOX)).status_code == 201
        sessions = broker.app.state.broker.sessions

        def dispatcher_for(
            http: httpx.AsyncClient,
            timeout: float = 30,  # room for a loaded machine
            policy: InboxPolicy = InboxPolicy(allow_loopback=True),  # noqa: B008
            sessions: Any = sessions,
        ) -> DeliveryDispatcher:
            return DeliveryDispatcher(
                sessions,
                http,
                timeout=timeout,
                poll_interval=0.1,
                backoff_cap=1,
                policy=policy,
                signing_key=broker.app.state.broker.signing_key,
            )

        yield World(broker, dispatcher_for)


async def status_of(broker: Broker, message_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await broker.status(message_id, AT)).json()
    return body


async def make_due_now(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await session.execute(update(Delivery).values(next_attempt_at=datetime.now(UTC)))
            await session.commit()
    finally:
        await engine.dispose()


async def test_push_to_a_real_node_is_acknowledged_and_opened(world: World, tmp_path: Path) -> None:
    key_file = tmp_path / "ng.keys.json"
    NG.write(key_file)
    async with running_node(
        tmp_path, [key_file], world.broker.client, "case-worker-token"
    ) as to_node:
        envelope = referral(AT, NG, payload=PAYLOAD)
        accepted = (await world.broker.submit(envelope)).json()
        message_id = accepted["message_id"]
        assert await world.dispatcher_for(to_node).run_once() == 1

        status = await status_of(world.broker, message_id)
        assert status["status"] == "acknowledged"
        assert status["delivery"]["attempts"] == 1
        received = (
            await to_node.get("/messages", headers={"authorization": "Bearer case-worker-token"})
        ).json()
        assert [(m["message_id"], m["payload"]) for m in received["messages"]] == [
            (message_id, PAYLOAD)
        ]
        # A second push of the same message (e.g. after a lost ack) stores nothing new.
        push = {"envelope": envelope, "receipt": accepted["receipt"]}
        broker_key = world.broker.app.state.broker.signing_key
        again_response = await to_node.post("/inbox", json=push, auth=SignedRequests(broker_key))
        assert again_response.status_code == 200
        again = (
            await to_node.get("/messages", headers={"authorization": "Bearer case-worker-token"})
        ).json()
        assert len(again["messages"]) == 1


def fake_inbox(answer: Callable[[dict[str, Any]], tuple[int, Any]]) -> httpx.AsyncClient:
    app = FastAPI()

    @app.post("/inbox")
    async def inbox(request: Request) -> Any:
        from fastapi.responses import JSONResponse

        push = await request.json()
        status, body = answer(push["envelope"])
        return JSONResponse(body, status_code=status)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node-ng.test")


def ack_for(envelope: dict[str, Any], key: SigningKey, **overrides: Any) -> dict[str, Any]:
    claims = jws.parse(envelope, jws.TYP_ENVELOPE).claims()
    ack = {
        "v": 1,
        "message_id": claims["id"],
        "envelope_digest": jws.digest(envelope),
        "recipient": NG.participant,
        "received_at": "2026-11-23T00:00:00.000Z",
        "status": "received",
        **overrides,
    }
    return {"ack": jws.sign(ack, key, jws.TYP_ACK)}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda env: (500, {"detail": "boom"}), "http_500"),
        (lambda env: (200, {"no": "ack"}), "ack_malformed"),
        (lambda env: (200, ack_for(env, SigningKey.generate())), "ack_unknown_key"),
        (lambda env: (200, ack_for(env, AT.signing)), "ack_unknown_key"),
        (
            lambda env: (200, ack_for(env, NG.signing, envelope_digest="sha-256:other")),
            "ack_mismatch",
        ),
        (lambda env: (200, ack_for(env, NG.signing, status="lost")), "ack_mismatch"),
        (
            lambda env: (200, ack_for(env, NG.signing, status="rejected", code="payload-invalid")),
            "ack_malformed",
        ),
        (lambda env: (200, ack_for(env, NG.signing, reasons=["payload: x"])), "ack_malformed"),
        (
            lambda env: (200, ack_for(env, NG.signing, status="rejected", reasons=["header: x"])),
            "ack_malformed",
        ),
        (lambda env: (200, ack_for(env, NG.signing, code="payload-invalid")), "ack_malformed"),
    ],
    ids=[
        "500",
        "no-ack",
        "stranger-key",
        "sender-key",
        "other-digest",
        "unknown-status",
        "rejection-without-reasons",
        "receipt-with-reasons",
        "rejection-without-code",
        "receipt-with-code",
    ],
)
async def test_anything_but_a_valid_ack_is_a_failed_attempt_and_retried(
    world: World, database_url: str, answer: Callable[[dict[str, Any]], tuple[int, Any]], error: str
) -> None:
    message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
    async with fake_inbox(answer) as bad_node:
        assert await world.dispatcher_for(bad_node).run_once() == 1
    status = await status_of(world.broker, message_id)
    assert status["status"] == "accepted"
    assert status["delivery"] | {"last_attempt_at": None} == {
        "status": "pending",
        "attempts": 1,
        "last_error": error,
        "acknowledged_at": None,
        "last_attempt_at": None,
        "fetched_at": None,
        "dead_lettered_at": None,
    }

    # Once the node answers properly, the retry delivers it.
    await make_due_now(database_url)
    async with fake_inbox(lambda env: (200, ack_for(env, NG.signing))) as good_node:
        assert await world.dispatcher_for(good_node).run_once() == 1
    status = await status_of(world.broker, message_id)
    assert (status["status"], status["delivery"]["attempts"]) == ("acknowledged", 2)


async def test_a_signed_rejection_is_final_recorded_in_the_ledger_and_never_retried(
    world: World, database_url: str
) -> None:
    message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
    reasons = ["payload/immediate_needs/0: not a known code"]
    calls: list[str] = []

    def reject(envelope: dict[str, Any]) -> tuple[int, Any]:
        calls.append("called")
        return 200, ack_for(
            envelope, NG.signing, status="rejected", reasons=reasons, code="payload-invalid"
        )

    async with fake_inbox(reject) as node:
        assert await world.dispatcher_for(node).run_once() == 1
        status = await status_of(world.broker, message_id)
        assert status["status"] == "rejected"
        assert status["delivery"]["status"] == "rejected"
        assert (status["delivery"]["attempts"], status["delivery"]["last_error"]) == (1, None)
        assert status["delivery"]["acknowledged_at"] is not None

        # Final: even once due again, a rejected delivery is not claimed or pushed again.
        await make_due_now(database_url)
        assert await world.dispatcher_for(node).run_once() == 0
    assert calls == ["called"]

    sessions = world.broker.app.state.broker.sessions
    async with sessions() as session:
        delivery = (
            await session.scalars(select(Delivery).where(Delivery.message_id == message_id))
        ).one()
        entries = (
            await session.scalars(select(LedgerEntry).where(LedgerEntry.type == "message.rejected"))
        ).all()
    assert delivery.ack is not None
    assert [json.loads(e.body)["message_id"] for e in entries] == [message_id]
    entry = json.loads(entries[0].body)
    assert entry["ack_digest"] == jws.digest(json.loads(delivery.ack))
    assert entry["parties"] == [AT.participant, NG.participant]
    assert b"immediate_needs" not in entries[0].body  # reasons stay out of the ledger


async def test_a_pushed_mismatch_rejection_is_a_finding_and_undoes_the_referral(
    world: World,
) -> None:
    signed = referral(AT, NG)
    message_id = (await world.broker.submit(signed)).json()["message_id"]
    case_ref = jws.parse(signed, jws.TYP_ENVELOPE).claims()["case_ref"]

    def reject(envelope: dict[str, Any]) -> tuple[int, Any]:
        reasons = ["header/subject_is_minor: not what the payload says"]
        mismatch = {"reasons": reasons, "code": "header-payload-mismatch"}
        return 200, ack_for(envelope, NG.signing, status="rejected", **mismatch)

    async with fake_inbox(reject) as node:
        assert await world.dispatcher_for(node).run_once() == 1
    assert (await status_of(world.broker, message_id))["status"] == "rejected"
    sessions = world.broker.app.state.broker.sessions
    async with sessions() as session:
        rejected = (
            await session.scalars(select(LedgerEntry).where(LedgerEntry.type == "message.rejected"))
        ).one()
    assert json.loads(rejected.body)["code"] == "header-payload-mismatch"
    alerts = (await world.broker.call("GET", "/v1/alerts", AT)).json()["alerts"]
    assert [(a["kind"], a["case_ref"]) for a in alerts] == [("header_payload_mismatch", case_ref)]
    # The referral never counted: its sender sends it again, corrected, on the same case.
    view = (await world.broker.call("GET", f"/v1/cases/{case_ref}", AT)).json()
    assert view["state"]["referral_rejected"] is True
    corrected = await world.broker.submit(referral(AT, NG, case_ref=case_ref))
    assert corrected.status_code == 202, corrected.text


async def test_unreachable_inbox_is_a_failed_attempt(world: World) -> None:
    message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as unreachable:
        assert await world.dispatcher_for(unreachable).run_once() == 1
        status = await status_of(world.broker, message_id)
    assert status["status"] == "accepted"
    assert status["delivery"]["last_error"].startswith("transport_")
    assert datetime.fromisoformat(status["delivery"]["last_attempt_at"]) <= datetime.now(UTC)


async def test_push_rechecks_the_inbox_address_and_refuses_internal_ones(world: World) -> None:
    # Registered while loopback was allowed; a dispatcher with the strict policy will not call it.
    message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
    calls: list[str] = []

    def answer(envelope: dict[str, Any]) -> tuple[int, Any]:
        calls.append("called")
        return 200, ack_for(envelope, NG.signing)

    async with fake_inbox(answer) as node:
        strict = world.dispatcher_for(node, policy=InboxPolicy())
        assert await strict.run_once() == 1
    status = await status_of(world.broker, message_id)
    assert (status["status"], status["delivery"]["last_error"]) == (
        "accepted",
        "inbox_address_refused",
    )
    assert calls == []


def streaming_inbox(chunks: int, chunk: bytes, pause: float) -> httpx.AsyncClient:
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.post("/inbox")
    async def inbox() -> StreamingResponse:
        async def drip() -> AsyncIterator[bytes]:
            for _ in range(chunks):
                await asyncio.sleep(pause)
                yield chunk

        return StreamingResponse(drip(), media_type="application/json")

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node-ng.test")


@pytest.mark.parametrize(
    ("inbox", "timeout", "error"),
    [
        # A 30 s drip, cut off by a 1 s total deadline.
        (lambda: streaming_inbox(300, b" ", 0.1), 1, "timeout"),
        # Answers refused for what they are, with a deadline a loaded machine cannot reach.
        (lambda: streaming_inbox(100, b" " * 1024, 0), 30, "ack_too_large"),  # huge answer
        (lambda: streaming_inbox(1, b'{"ack": ' + b"1" * 5000 + b"}", 0), 30, "ack_malformed"),
    ],
    ids=["slow-drip", "huge-answer", "huge-integer"],
)
async def test_hostile_inboxes_are_bounded_and_recorded_as_failures(
    world: World, inbox: Callable[[], httpx.AsyncClient], timeout: float, error: str
) -> None:
    message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
    async with inbox() as hostile:
        dispatcher = world.dispatcher_for(hostile, timeout=timeout)
        started = asyncio.get_running_loop().time()
        assert await dispatcher.run_once() == 1
        # Far sooner than the drip would end (the bound has room for a loaded machine: it
        # tells a deadline from none, not how fast the machine is).
        assert asyncio.get_running_loop().time() - started < 15
    status = await status_of(world.broker, message_id)
    assert (status["status"], status["delivery"]["last_error"]) == ("accepted", error)


async def test_a_push_still_waiting_for_its_answer_holds_up_no_other_message(
    world: World,
) -> None:
    """The dispatcher keeps pushes in flight side by side: a message accepted while an
    earlier push waits on a slow inbox is pushed and acknowledged at once."""
    held = asyncio.Event()
    arrived: list[str] = []
    app = FastAPI()

    @app.post("/inbox")
    async def inbox(request: Request) -> Any:
        from fastapi.responses import JSONResponse

        envelope = (await request.json())["envelope"]
        arrived.append(jws.parse(envelope, jws.TYP_ENVELOPE).claims()["id"])
        if len(arrived) == 1:
            await held.wait()  # the first push's answer is slow to come
        return JSONResponse(ack_for(envelope, NG.signing))

    node = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ng.test")
    dispatcher = world.dispatcher_for(node)
    loop = asyncio.create_task(dispatcher.run_forever())
    try:
        slow = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
        async with asyncio.timeout(30):
            while not arrived:
                await asyncio.sleep(0.02)
        quick = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
        async with asyncio.timeout(30):
            while (await status_of(world.broker, quick))["status"] != "acknowledged":
                await asyncio.sleep(0.05)
        assert (await status_of(world.broker, slow))["status"] == "accepted"  # still waiting

        held.set()
        async with asyncio.timeout(30):
            while (await status_of(world.broker, slow))["status"] != "acknowledged":
                await asyncio.sleep(0.05)
        assert arrived == [slow, quick]
    finally:
        held.set()
        dispatcher.stop()
        await loop
        await node.aclose()


async def test_an_acknowledged_push_costs_two_transactions(world: World) -> None:
    """Claim under a lease (one transaction), push, then verify the answer and record it in
    one more: the answer's key is read where the answer is recorded (issue 21)."""
    sessions = world.broker.app.state.broker.sessions
    opened: list[str] = []

    def counted() -> Any:  # the dispatcher's own sessions (the broker's loops have theirs)
        opened.append("session")
        return sessions()

    async with fake_inbox(lambda env: (200, ack_for(env, NG.signing))) as node:
        dispatcher = world.dispatcher_for(node, sessions=counted)
        assert await dispatcher.run_once() == 0  # its first leases released, its sweep done
        dispatcher._next_sweep = datetime.now(UTC) + timedelta(hours=1)
        message_id = (await world.broker.submit(referral(AT, NG))).json()["message_id"]
        opened.clear()
        assert await dispatcher.run_once() == 1
    status = await status_of(world.broker, message_id)
    assert status["status"] == "acknowledged"
    assert len(opened) == 2

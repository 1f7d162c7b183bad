"""The node's outbox (issue 18): a message is stored, signed, before the broker is called and
answered ``202 queued``; the background sender submits the same bytes until a receipt or a
final refusal, per case in order; ``Prefer: wait`` answers the outcome; ``Idempotency-Key``
makes a client's retry answer the first answer, never a second message."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import TOKEN, node_database, node_settings, rows, running_node
from tests.support import Broker, broker_settings, polling, running_broker
from trm_broker.crypto import jws
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node import outbox_sender
from trm_broker.node.broker_client import BrokerError
from trm_broker.node.outbox_calls import wait_asked
from trm_broker.node.store import IdempotentAnswer, OutboxMessage, SentMessage

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
AUTH = {"authorization": f"Bearer {TOKEN}"}
REFERRAL = {"destination_country": "NG", "is_child": False, "languages": ["en"]}
PROBLEM = "urn:trm-broker:problem:"


class Switchboard(httpx.AsyncBaseTransport):
    """The way from the node to the in-process broker, with the faults a network has: the
    broker ``down`` (connection refused), answers lost after the broker acted
    (``lose_answers``), answers made up in its place (``scripted``). It records every
    envelope submitted, byte for byte, and the broker's status for each."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.lose_answers = 0
        self.scripted: list[httpx.Response] = []
        self.submitted: list[bytes] = []
        self.answers: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        submission = request.method == "POST" and request.url.path == "/v1/messages"
        if submission:
            self.submitted.append(request.content)
            if self.scripted:
                return self.scripted.pop(0)
        response = await self.inner.handle_async_request(request)
        if submission:
            self.answers.append(response.status_code)
            if self.lose_answers:
                self.lose_answers -= 1
                await response.aread()
                raise httpx.ReadError("connection reset", request=request)
        return response


@dataclass
class World:
    broker: Broker
    wire: Switchboard
    node: httpx.AsyncClient  # serves AT and NG; sends no Prefer unless told
    node_db: str
    case_ref: str = field(default_factory=lambda: f"AT-OB-{datetime.now(UTC):%H%M%S%f}")

    async def consent(self, case_ref: str | None = None) -> str:
        case_ref = case_ref or self.case_ref
        body = {
            "id": f"consent-{case_ref}",
            "case_ref": case_ref,
            "given_by": "person",
            "purposes": [t.value for t in MessageType],
            "recipients": [NG.participant, AT.participant],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "A" * 43,
        }
        response = await self.broker.call("POST", "/v1/consents", AT, json=body)
        assert response.status_code == 201, response.text
        return str(body["id"])

    async def send(
        self,
        path: str = "referral",
        *,
        case_ref: str | None = None,
        payload: dict[str, Any] | None = None,
        sender: KeySet = AT,
        recipient: KeySet = NG,
        consent: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        case_ref = case_ref or self.case_ref
        body = {
            "sender": sender.participant,
            "recipient": recipient.participant,
            "payload": REFERRAL if payload is None else payload,
            "consent_ref": consent or f"consent-{case_ref}",
        }
        return await self.node.post(
            f"/cases/{case_ref}/{path}", json=body, headers={**AUTH, **(headers or {})}
        )

    async def outbox(self, message_id: str) -> dict[str, Any]:
        response = await self.node.get(f"/outbox/{message_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def settled(self, message_id: str) -> dict[str, Any]:
        """The message once the sender has settled it (receipted or refused)."""
        found: dict[str, Any] = {}
        async for _ in polling():
            found = await self.outbox(message_id)
            if found["state"] != "queued":
                break
        assert found["state"] != "queued", found
        return found

    async def at_broker(self, message_id: str) -> dict[str, Any]:
        response = await self.broker.status(message_id, AT)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status


@pytest.fixture
async def world(
    database_url: str, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[World]:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            assert (await broker.register(keyset, country)).status_code == 201
        wire = Switchboard(httpx.ASGITransport(app=broker.app))
        node_db = node_database(request, tmp_path, backend)
        settings = node_settings(
            tmp_path,
            [AT, NG],
            node_db,
            node_outbox_retry_base_seconds=0.05,
            node_outbox_retry_max_seconds=0.2,
            node_prefer_wait_max_seconds=10,
        )
        async with (
            httpx.AsyncClient(transport=wire, base_url="http://broker") as to_broker,
            running_node(settings, to_broker, wait_for_receipt=False) as node,
        ):
            yield World(broker, wire, node, node_db)


async def outbox_rows(world: World) -> list[dict[str, Any]]:
    return await rows(world.node_db, OutboxMessage)


async def test_a_send_is_stored_signed_before_the_broker_is_called_and_answered_queued(
    world: World,
) -> None:
    await world.consent()
    warm = await world.send("referral", headers={"prefer": "wait=10"})  # reads the registry
    assert warm.status_code == 201, warm.text
    world.wire.down = True
    other = f"{world.case_ref}-2"
    queued = await world.send("referral", case_ref=other)
    assert queued.status_code == 202, queued.text
    answer = queued.json()
    assert answer == {"message_id": answer["message_id"], "status": "queued"}
    assert queued.headers["location"] == f"/outbox/{answer['message_id']}"
    # Stored before any call could succeed: the exact envelope, its id, case and parties.
    [row] = [r for r in await outbox_rows(world) if r["id"] == answer["message_id"]]
    assert (row["case_ref"], row["sender"], row["recipient"]) == (
        other,
        AT.participant,
        NG.participant,
    )
    assert row["state"] == "queued"
    claims = jws.parse(json.loads(row["envelope"]), jws.TYP_ENVELOPE).claims()
    assert claims["id"] == answer["message_id"]
    # It waits, and says why.
    async for _ in polling():
        seen = await world.outbox(answer["message_id"])
        if seen["attempts"] >= 2:
            break
    assert (seen["state"], seen["last_error"]) == ("queued", "broker_unreachable")
    assert seen["attempts"] >= 2
    # The broker is back: the very bytes stored are accepted, once.
    await world.consent(other)
    world.wire.down = False
    settled = await world.settled(answer["message_id"])
    assert settled["state"] == "receipted", settled
    assert settled["receipt"]["message_id"] == answer["message_id"]
    assert world.wire.submitted[-1] == row["envelope"].encode()
    assert (await world.at_broker(answer["message_id"]))["message_id"] == answer["message_id"]
    [sent] = [r for r in await rows(world.node_db, SentMessage) if r["id"] == answer["message_id"]]
    assert sent["envelope_digest"] == jws.digest(json.loads(row["envelope"]))


async def test_a_lost_answer_resubmits_the_same_bytes_and_gets_the_original_receipt(
    world: World,
) -> None:
    """The broker took the message, its answer was lost: the same envelope again gets the
    original receipt (200), and the broker holds one message."""
    await world.consent()
    world.wire.lose_answers = 1
    sent = await world.send("referral", headers={"prefer": "wait=10"})
    assert sent.status_code == 201, sent.text
    assert world.wire.answers == [202, 200]
    assert world.wire.submitted[0] == world.wire.submitted[1]
    assert (await world.at_broker(sent.json()["message_id"]))["message_id"] == sent.json()[
        "message_id"
    ]
    messages, _ = await world.broker.stored_counts()
    assert messages == 1


async def test_a_case_goes_in_the_order_it_was_queued_and_other_cases_do_not_wait(
    world: World,
) -> None:
    """Queued while the broker is down: a referral, then its acceptance (the workflow refuses
    an acceptance before the referral). They go in that order; a case whose first message
    keeps failing holds back only its own later messages."""
    await world.consent()
    stuck = f"{world.case_ref}-S"
    await world.consent(stuck)
    warm = await world.send("referral", case_ref=f"{world.case_ref}-W", consent=f"consent-{stuck}")
    assert warm.status_code == 202  # reads the registry (refused later: no consent for that case)
    world.wire.down = True
    referral = (await world.send("referral")).json()["message_id"]
    accepted = await world.send(
        "referral-response", payload={"accepted": True}, sender=NG, recipient=AT
    )
    blocked = (await world.send("referral", case_ref=stuck)).json()["message_id"]
    after_blocked = await world.send(
        "referral-response", case_ref=stuck, payload={"accepted": True}, sender=NG, recipient=AT
    )
    # The stuck case's first message gets 503s from the broker; the others are fine.
    blocked_bytes = next(r["envelope"] for r in await outbox_rows(world) if r["id"] == blocked)
    world.wire.scripted = []

    class Stuck(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.content == blocked_bytes.encode():
                return httpx.Response(503, json={"title": "Unavailable"})
            return await inner.handle_async_request(request)

    inner, world.wire.inner = world.wire.inner, Stuck()
    world.wire.down = False
    for message_id in (referral, accepted.json()["message_id"]):
        assert (await world.settled(message_id))["state"] == "receipted"
    first = await world.at_broker(referral)
    second = await world.at_broker(accepted.json()["message_id"])
    assert first["accepted_at"] < second["accepted_at"]
    held = await world.outbox(after_blocked.json()["message_id"])
    assert (await world.outbox(blocked))["last_error"] == "http_503"
    assert (held["state"], held["attempts"]) == ("queued", 0)  # never tried: it waits its turn
    world.wire.inner = inner
    assert (await world.settled(blocked))["state"] == "receipted"
    assert (await world.settled(after_blocked.json()["message_id"]))["state"] == "receipted"


async def test_a_final_refusal_is_kept_with_what_to_fix_and_the_case_goes_on(
    world: World,
) -> None:
    sent = await world.send("referral", consent="consent-never-registered")
    assert sent.status_code == 202
    refused = await world.settled(sent.json()["message_id"])
    assert refused["state"] == "refused"
    problem = refused["refused"]
    assert problem["type"] == PROBLEM + "broker-refused"
    assert (problem["status"], problem["broker_status"]) == (403, 403)
    assert problem["rule"]
    assert problem["detail"]
    assert refused["receipt"] is None
    # The case is not held up by it: the same referral under a real consent goes.
    await world.consent()
    again = await world.send("referral", headers={"prefer": "wait=10"})
    assert again.status_code == 201, again.text
    listing = await world.node.get(
        "/outbox", params={"case_ref": world.case_ref, "state": "refused"}, headers=AUTH
    )
    assert [m["message_id"] for m in listing.json()["messages"]] == [sent.json()["message_id"]]


async def test_prefer_wait_answers_the_outcome_or_queued_when_it_does_not_come_in_time(
    world: World,
) -> None:
    await world.consent()
    receipted = await world.send("referral", headers={"prefer": "respond-async, wait=10"})
    assert receipted.status_code == 201, receipted.text
    assert set(receipted.json()) == {"message_id", "envelope_digest", "accepted_at", "receipt"}
    refused = await world.send(  # an acceptance from the referring side: a workflow rule
        "referral-response", payload={"accepted": True}, headers={"prefer": "wait=10"}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == PROBLEM + "broker-refused"
    assert refused.headers["content-type"] == "application/problem+json"
    world.wire.down = True
    started = asyncio.get_running_loop().time()
    waited = await world.send(
        "referral-response",
        payload={"accepted": True},
        sender=NG,
        recipient=AT,
        headers={"prefer": "wait=1"},
    )
    took = asyncio.get_running_loop().time() - started
    assert waited.status_code == 202, waited.text
    assert waited.json()["status"] == "queued"
    assert 1 <= took < 10  # the wait asked, not the 10 s the node allows


def test_the_wait_asked_is_read_as_rfc_7240_says_and_bounded() -> None:
    assert wait_asked(None, 30) == 0
    assert wait_asked("wait=10", 30) == 10
    assert wait_asked("respond-async, wait=5", 30) == 5
    assert wait_asked('Wait="7"', 30) == 7
    assert wait_asked("wait=100", 30) == 30  # cut to TRM_NODE_PREFER_WAIT_MAX_SECONDS
    assert wait_asked("wait=soon, handling=lenient", 30) == 0  # not a wait it can read
    assert wait_asked("wait=5", 0) == 0  # waiting switched off


async def test_what_does_not_fit_is_refused_before_anything_is_stored(world: World) -> None:
    bad = await world.send("referral", payload={"destination_country": "NG", "is_child": "?"})
    assert bad.status_code == 400
    assert await outbox_rows(world) == []
    assert world.wire.submitted == []


# --- Idempotency-Key --------------------------------------------------------------------


async def test_a_retry_with_the_same_key_answers_the_first_answer_and_sends_nothing_again(
    world: World,
) -> None:
    await world.consent()
    key = {"idempotency-key": "3f1c2a90-7b1e-4c55-9d1e-6a2b8f0e4d11"}
    first = await world.send("referral", headers=key)
    again = await world.send("referral", headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    await world.settled(first.json()["message_id"])
    assert len(await outbox_rows(world)) == 1
    assert len(world.wire.submitted) == 1
    # A different request under the same key is refused, and nothing is stored for it.
    other = await world.send("referral", payload={**REFERRAL, "languages": ["fr"]}, headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["type"] == PROBLEM + "idempotency-key-reused"
    assert "languages" not in other.text
    assert "fr" not in other.json()["detail"]
    assert len(await outbox_rows(world)) == 1


async def test_a_key_keeps_the_answer_it_was_given_with_prefer_wait(world: World) -> None:
    await world.consent()
    key = {"idempotency-key": '"retry-me-1"', "prefer": "wait=10"}
    first = await world.send("referral", headers=key)
    assert first.status_code == 201, first.text
    again = await world.send("referral", headers={"idempotency-key": '"retry-me-1"'})
    assert (again.status_code, again.json()) == (201, first.json())


async def test_concurrent_requests_with_one_key_make_one_message(world: World) -> None:
    await world.consent()
    key = {"idempotency-key": "concurrent-1"}
    answers = await asyncio.gather(*(world.send("referral", headers=key) for _ in range(4)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["message_id"] for a in answers}) == 1
    assert len(await outbox_rows(world)) == 1


async def test_a_refused_request_leaves_its_key_free_and_a_key_expires(world: World) -> None:
    await world.consent()
    key = {"idempotency-key": "fix-and-retry"}
    bad = await world.send("referral", payload={"destination_country": "XX"}, headers=key)
    assert bad.status_code == 400
    good = await world.send("referral", headers=key)
    assert good.status_code == 202, good.text
    [kept] = await rows(world.node_db, IdempotentAnswer)
    lifetime = kept["expires_at"] - kept["created_at"]
    assert lifetime == timedelta(seconds=24 * 3600)  # TRM_NODE_IDEMPOTENCY_KEY_SECONDS
    assert kept["caller"] != TOKEN
    assert TOKEN not in kept["caller"]
    # Once expired, the key is forgotten: the same request is a new message.
    app = world.node._transport.app  # type: ignore[attr-defined]
    async with app.state.node.sessions() as session:
        row = await session.get(IdempotentAnswer, (kept["caller"], kept["route"], kept["key"]))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()
    later = await world.send("referral", headers=key)
    assert later.status_code == 202
    assert later.json()["message_id"] != good.json()["message_id"]


async def test_a_key_is_scoped_to_its_route(world: World) -> None:
    await world.consent()
    key = {"idempotency-key": "same-key"}
    referral = await world.send("referral", headers=key)
    other_case = await world.send("referral", case_ref=f"{world.case_ref}-B", headers=key)
    assert referral.status_code == 202
    assert other_case.status_code == 422  # the same route, another path: another request
    response = await world.node.post(
        "/messages",
        json={
            "type": "referral",
            "case_ref": f"{world.case_ref}-B",
            "recipient": NG.participant,
            "sender": AT.participant,
            "payload": REFERRAL,
            "consent_ref": f"consent-{world.case_ref}-B",
        },
        headers={**AUTH, **key},
    )
    assert response.status_code == 202, response.text  # another route: its own keys


async def test_a_consent_registered_with_a_key_is_registered_once(world: World) -> None:
    consent = {
        "id": f"consent-{world.case_ref}",
        "case_ref": world.case_ref,
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [NG.participant],
        "data_categories": ["identity"],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "B" * 43,
    }
    body = {"sender": AT.participant, "consent": consent}
    key = {**AUTH, "idempotency-key": "consent-once"}
    first = await world.node.post("/consents", json=body, headers=key)
    again = await world.node.post("/consents", json=body, headers=key)
    unkeyed = await world.node.post("/consents", json=body, headers=AUTH)
    assert first.status_code == 201, first.text
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert unkeyed.status_code == 409  # without the key, the broker's own answer to a repeat


# --- after an outage longer than the broker's clock window -------------------------------


async def test_an_envelope_stale_after_an_outage_is_signed_again_under_the_same_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker refuses an envelope made more than TRM_CLOCK_SKEW_SECONDS ago; it checks
    ids first, so that refusal proves it never took this one: the node signs the same
    envelope again with the current time, and the message goes, once, under its id."""
    # A window of 4 s, not less: a loaded machine (the whole suite on 2 cores) can take over
    # a second between signing a request and the broker's check of it, and a fresh request
    # refused as too old (401) is final.
    monkeypatch.setattr(outbox_sender, "RESIGN_AFTER", timedelta(seconds=1))
    world.broker.app.state.broker.settings = world.broker.settings.model_copy(
        update={"clock_skew_seconds": 4}
    )
    await world.consent()
    warm = await world.send("referral", case_ref=f"{world.case_ref}-W")
    assert warm.status_code == 202
    world.wire.down = True
    sent = (await world.send("referral")).json()["message_id"]
    await asyncio.sleep(5)  # longer than the broker's window
    world.wire.down = False
    settled = await world.settled(sent)
    assert settled["state"] == "receipted", settled
    [row] = [r for r in await outbox_rows(world) if r["id"] == sent]
    [earlier] = json.loads(row["earlier_envelopes"])
    stale, fresh = (
        jws.parse(json.loads(e), jws.TYP_ENVELOPE).claims() for e in (earlier, row["envelope"])
    )
    assert stale["id"] == fresh["id"] == sent
    assert (stale["sealed"], stale["header"]) == (fresh["sealed"], fresh["header"])
    assert fresh["created_at"] > stale["created_at"]
    assert settled["receipt"]["envelope_digest"] == jws.digest(json.loads(row["envelope"]))


async def test_a_version_the_broker_took_after_all_is_found_by_its_earlier_bytes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt still in flight at the broker when the node saw a stale refusal: the new
    version is answered 409 (the id holds other content), and the earlier bytes get their
    receipt. The message is receipted once, as the broker holds it."""
    monkeypatch.setattr(outbox_sender, "RESIGN_AFTER", timedelta(seconds=0))
    await world.consent()
    warm = await world.send("referral", case_ref=f"{world.case_ref}-W")
    assert warm.status_code == 202
    await world.settled(warm.json()["message_id"])
    world.wire.down = True
    sent = (await world.send("referral")).json()["message_id"]
    [row] = [r for r in await outbox_rows(world) if r["id"] == sent]
    original = json.loads(row["envelope"])
    # The broker took the original (the attempt in flight) ...
    assert (await world.broker.submit(original)).status_code == 202
    # ... while the node was told its attempt was stale.
    stale = {"type": PROBLEM + "invalid-envelope", "title": "The envelope is not valid"}
    world.wire.scripted = [httpx.Response(400, json={**stale, "status": 400})]
    world.wire.down = False
    settled = await world.settled(sent)
    assert settled["state"] == "receipted", settled
    assert settled["receipt"]["envelope_digest"] == jws.digest(original)
    assert world.wire.answers[-2:] == [409, 200]


@pytest.mark.parametrize(
    ("status", "problem", "settled"),
    [
        (403, {"type": PROBLEM + "consent-refused", "rule": "consent_scope"}, True),
        (409, {"type": PROBLEM + "workflow-rule", "rule": "referral_first"}, True),
        (400, {"type": PROBLEM + "invalid-envelope"}, True),
        (401, {"type": PROBLEM + "bad-signature"}, True),  # the node's own key: a set-up fault
        (502, {"title": "Invalid receipt"}, True),  # the same receipt would come again
        (409, {"type": PROBLEM + "conflict"}, False),  # "changed at the same time; again"
        (401, {"type": PROBLEM + "replayed-request"}, False),
        (408, {"type": PROBLEM + "request-timeout"}, False),
        (429, {"type": PROBLEM + "rate-limited"}, False),
        (503, {"title": "Broker unreachable"}, False),
        (500, {"type": PROBLEM + "internal-error"}, False),
    ],
)
def test_what_settles_a_message_as_refused_and_what_is_tried_again(
    status: int, problem: dict[str, Any], settled: bool
) -> None:
    assert outbox_sender.final(BrokerError(status, problem)) is settled

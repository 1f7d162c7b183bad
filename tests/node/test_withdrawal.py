"""When the person withdraws consent, every node that received data under it restricts that
data at once (its case workers see the message, not its content, and are told why and until
when) and deletes the content once the node's retention has passed: the destination focal
point's node from the withdrawal message, the receiving organisation's (which gets no such
message) from its alert at the broker, the sending focal point's as it withdraws."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.node.harness import TOKEN, node_database, node_settings, rows, running_node
from tests.node.harness import stored_messages as read
from tests.support import Broker, broker_settings, envelope, polling, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.domain.projections import project
from trm_broker.logs import configure_logging
from trm_broker.node.store import ReceivedMessage, WithdrawnConsent
from trm_broker.web.signed_requests import SignedRequests

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")
AUTH = {"authorization": f"Bearer {TOKEN}"}
T = MessageType
#: Put in the payloads: never in a log, nor in what a restricted message shows.
CANARY_REFERRAL = "CANARY4WDRREF"
CANARY_PLAN = "CANARY4WDRPLAN"


@pytest.fixture(autouse=True)
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream)
    yield stream
    logging.getLogger().handlers.clear()


@dataclass
class World:
    broker: Broker
    at: httpx.AsyncClient  # the sending focal point's node
    ng: httpx.AsyncClient  # the destination focal point's node
    shelter: httpx.AsyncClient  # the receiving organisation's own node
    shelter_db: str
    case_ref: str
    consent_ref: str


@pytest.fixture
def retention() -> float:
    """The nodes' TRM_NODE_WITHDRAWN_RETENTION_SECONDS (a test may ask for another)."""
    return 30 * 24 * 3600.0


@pytest.fixture
async def world(
    request: pytest.FixtureRequest,
    database_url: str,
    backend: str,
    tmp_path: Path,
    retention: float,
) -> AsyncIterator[World]:
    """Three nodes in pull mode (no inbox URLs), each polling its alerts every 0.2 s; the
    shelter's on the test's backend, the others on SQLite files."""
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
        ]:
            assert (await broker.register(keyset, country, kind=kind)).status_code == 201
        options: dict[str, Any] = {
            "node_pull": True,
            "node_pull_wait_seconds": 0.5,
            "node_alert_poll_seconds": 0.2,
            "node_withdrawn_retention_seconds": retention,
        }
        shelter_db = node_database(request, tmp_path, backend)
        if backend == "sqlite":
            shelter_db = f"sqlite+aiosqlite:///{tmp_path / 'shelter.db'}"
        transport = httpx.ASGITransport(app=broker.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://broker") as to_broker,
            running_node(
                node_settings(
                    tmp_path, [AT], f"sqlite+aiosqlite:///{tmp_path / 'at.db'}", **options
                ),
                to_broker,
            ) as at,
            running_node(
                node_settings(
                    tmp_path, [NG], f"sqlite+aiosqlite:///{tmp_path / 'ng.db'}", **options
                ),
                to_broker,
            ) as ng,
            running_node(
                node_settings(tmp_path, [SHELTER], shelter_db, **options), to_broker
            ) as shelter,
        ):
            case_ref = f"AT-{datetime.now(UTC):%H%M%S%f}"
            consent_ref = f"consent-{case_ref}"
            yield World(broker, at, ng, shelter, shelter_db, case_ref, consent_ref)


def message(
    kind: MessageType, sender: KeySet, recipient: KeySet, payload: dict[str, Any], consent: str
) -> dict[str, Any]:
    """A per-type call's body: the header and categories as the payload projects them."""
    projection = project(kind, PAYLOAD_MODELS[kind].model_validate(payload), datetime.now(UTC))
    return {
        "sender": sender.participant,
        "recipient": recipient.participant,
        "header": projection.header_json(),
        "payload": payload,
        "data_categories": projection.categories_json(),
        "consent_ref": consent,
    }


async def received(node: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    """The message as the node's case workers read it, once the node has fetched it."""
    found: dict[str, Any] | None = None
    async for _ in polling():
        found = next((m for m in await read(node) if m["message_id"] == message_id), None)
        if found is not None:
            break
    assert found is not None, "the message never reached the node"
    return found


async def sent(
    world: World, node: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await node.post(f"/cases/{world.case_ref}/{path}", json=body, headers=AUTH)
    assert response.status_code == 201, (path, response.text)
    answer: dict[str, Any] = response.json()
    return answer


@dataclass
class Held:
    """The messages each node received under the consent, by node."""

    at: list[str]
    ng: list[str]
    shelter: list[str]


async def case_up_to_the_return_plan(world: World) -> Held:
    """The consent; referral, acceptance, risk assessment; the return plan to NG and on to
    the shelter. Each message is waited for at its recipient's node before the next."""
    now = datetime.now(UTC)
    consent = {
        "id": world.consent_ref,
        "case_ref": world.case_ref,
        "given_by": "person",
        "purposes": ["referral", "referral_response", "risk_assessment", "return_preparation"],
        "recipients": [NG.participant, SHELTER.participant],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (now - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "D" * 43,
    }
    registered = await world.at.post("/consents", json={"consent": consent}, headers=AUTH)
    assert registered.status_code == 201, registered.text
    c = world.consent_ref
    referral = {
        "destination_country": "NG",
        "is_child": False,
        "identification_summary": f"Identified at a farm ({CANARY_REFERRAL}).",
        "form_of_exploitation": "forced_labour",
    }
    to_ng = await sent(world, world.at, "referral", message(T.REFERRAL, AT, NG, referral, c))
    await received(world.ng, to_ng["message_id"])
    accepted = message(T.REFERRAL_RESPONSE, NG, AT, {"accepted": True}, c)
    to_at = [(await sent(world, world.ng, "referral-response", accepted))["message_id"]]
    await received(world.at, to_at[0])
    assessment = {"risk_level": "low", "recommendation": "return", "assessed_at": now.isoformat()}
    assessed = message(T.RISK_ASSESSMENT, NG, AT, assessment, c)
    to_at.append((await sent(world, world.ng, "risk-assessment", assessed))["message_id"])
    await received(world.at, to_at[1])
    # A return counts the assessment once AT's node acknowledged it at the broker, which its
    # puller does just after storing it.
    status = ""
    async for _ in polling():
        status = (await world.broker.status(to_at[1], AT)).json()["status"]
        if status == "acknowledged":
            break
    assert status == "acknowledged"
    arrival = now + timedelta(days=6)
    plan = {
        "receiving_org": SHELTER.participant,
        "planned_arrival": arrival.isoformat().replace("+00:00", "Z"),
        "travel_date": arrival.date().isoformat(),
        "contact_person": f"Duty officer {CANARY_PLAN}",
    }
    prepared = await sent(
        world, world.at, "return-preparation", message(T.RETURN_PREPARATION, AT, NG, plan, c)
    )
    to_shelter = prepared["to_receiving_org"]["message_id"]
    assert to_shelter is not None, prepared
    await received(world.ng, prepared["message_id"])
    plan_at_shelter = await received(world.shelter, to_shelter)
    assert CANARY_PLAN in str(plan_at_shelter["payload"])  # it arrived, readable
    return Held(at=to_at, ng=[to_ng["message_id"], prepared["message_id"]], shelter=[to_shelter])


async def restricted_at(node: httpx.AsyncClient, message_ids: list[str]) -> list[dict[str, Any]]:
    """The node's view of these messages, once every one is restricted."""
    shown: list[dict[str, Any]] = []
    async for _ in polling():
        shown = [m for m in await read(node) if m["message_id"] in message_ids]
        if len(shown) == len(message_ids) and all(m["restricted"] for m in shown):
            break
    assert [m["restricted"] for m in shown] == [True] * len(message_ids), shown
    return shown


def withheld(shown: list[dict[str, Any]], retention: timedelta) -> None:
    """Each restricted message shows its metadata, no content, and says so in a sentence."""
    for message in shown:
        assert message["payload"] is None
        assert message["header"]  # the metadata stays: the case worker sees what it was
        restricted = datetime.fromisoformat(message["restricted_at"])
        delete_after = datetime.fromisoformat(message["delete_after"])
        assert delete_after == restricted + retention
        assert message["notice"] == (
            "The person withdrew consent: this message's content is kept, unread, until "
            f"{delete_after:%Y-%m-%d %H:%M} UTC, then deleted."
        )


def sqlite_bytes(database: str) -> bytes:
    """A SQLite database's file, with its write-ahead log."""
    path = Path(str(make_url(database).database))
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


async def alert_kinds(world: World, party: KeySet) -> list[list[str]]:
    response = await world.broker.call("GET", f"/v1/alerts?case_ref={world.case_ref}", party)
    assert response.status_code == 200, response.text
    return [a["parties"] for a in response.json()["alerts"] if a["kind"] == "consent_withdrawn"]


async def test_a_withdrawal_restricts_what_every_node_received_under_the_consent(
    world: World, json_logs: io.StringIO
) -> None:
    held = await case_up_to_the_return_plan(world)

    withdrawal = message(T.CONSENT_WITHDRAWAL, AT, NG, {}, world.consent_ref)
    notice = await sent(world, world.at, "consent-withdrawal", withdrawal)

    retention = timedelta(days=30)
    # NG's node, from the withdrawal message it received; the message itself stays readable.
    withheld(await restricted_at(world.ng, held.ng), retention)
    told = await received(world.ng, notice["message_id"])
    assert (told["type"], told["restricted"], told["payload"]) == ("consent_withdrawal", False, {})
    # The shelter's node, which got no withdrawal message: from its alert at the broker.
    assert await alert_kinds(world, SHELTER) == [[SHELTER.participant, AT.participant]]
    withheld(await restricted_at(world.shelter, held.shelter), retention)
    assert [m["type"] for m in await read(world.shelter)] == ["return_preparation"]
    learned = await rows(world.shelter_db, WithdrawnConsent)
    assert [(r["consent_ref"], r["learned_from"]) for r in learned] == [
        (world.consent_ref, "alert")
    ]
    # AT's node, which withdrew it: what NG sent it under the consent.
    withheld(await restricted_at(world.at, held.at), retention)

    # Nothing of the content shows, nor is logged; the content is still kept (30 days).
    for node in (world.at, world.ng, world.shelter):
        listing = await node.get("/messages", headers=AUTH)
        assert CANARY_REFERRAL not in listing.text
        assert CANARY_PLAN not in listing.text
    stored = await rows(world.shelter_db, ReceivedMessage)
    assert [CANARY_PLAN in (r["payload"] or "") for r in stored] == [True]
    logs = json_logs.getvalue()
    assert '"consent_withdrawal_learned"' in logs
    assert CANARY_REFERRAL not in logs
    assert CANARY_PLAN not in logs


@pytest.mark.parametrize("retention", [1.0])
async def test_after_the_retention_the_content_is_gone_from_the_database(
    world: World, tmp_path: Path, json_logs: io.StringIO
) -> None:
    """Withdrawn at the broker directly, with no message to anyone: every node learns of it
    from its alerts, restricts at once, and deletes the content a second later."""
    held = await case_up_to_the_return_plan(world)
    ng_db = f"sqlite+aiosqlite:///{tmp_path / 'ng.db'}"
    assert CANARY_REFERRAL.encode() in sqlite_bytes(ng_db)  # where the search below looks
    withdrawn = await world.broker.call("POST", f"/v1/consents/{world.consent_ref}/withdraw", AT)
    assert withdrawn.status_code == 200, withdrawn.text

    for node, ids in ((world.ng, held.ng), (world.shelter, held.shelter), (world.at, held.at)):
        await restricted_at(node, ids)

    async def deleted(database: str) -> bool:
        return all(
            r["payload"] is None and r["purged_at"] is not None
            for r in await rows(database, ReceivedMessage)
            if r["id"] in held.ng + held.shelter
        )

    async for _ in polling():
        if await deleted(ng_db) and await deleted(world.shelter_db):
            break
    assert await deleted(ng_db)
    assert await deleted(world.shelter_db)
    for message in await read(world.shelter):
        assert message["payload"] is None
        assert message["notice"].startswith(
            "The person withdrew consent: this message's content was deleted on "
        )
    # Not a byte of it left in the SQLite files, their free pages or their logs either.
    for database in (ng_db, world.shelter_db):
        if make_url(database).get_backend_name() == "sqlite":
            raw = sqlite_bytes(database)
            assert CANARY_REFERRAL.encode() not in raw
            assert CANARY_PLAN.encode() not in raw
    logs = json_logs.getvalue()
    assert '"withdrawn_payloads_deleted"' in logs
    assert CANARY_REFERRAL not in logs
    assert CANARY_PLAN not in logs


async def test_a_message_that_arrives_after_the_withdrawal_is_restricted_on_arrival(
    sqlite_database: str, tmp_path: Path
) -> None:
    """A push in flight when the consent was withdrawn (the broker accepted it before, and
    pushes it after the node learned of the withdrawal) is stored restricted."""
    async with running_broker(broker_settings(sqlite_database, tmp_path)) as broker:
        for keyset, country in ((AT, "AT"), (NG, "NG")):
            assert (await broker.register(keyset, country)).status_code == 201
        case_ref = f"AT-{datetime.now(UTC):%H%M%S%f}"
        consent_ref = f"consent-{case_ref}"
        consent = {
            "id": consent_ref,
            "case_ref": case_ref,
            "given_by": "person",
            "purposes": ["referral"],
            "recipients": [NG.participant],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "E" * 43,
        }
        assert (await broker.call("POST", "/v1/consents", AT, json=consent)).status_code == 201
        payload = {"destination_country": "NG", "identification_summary": CANARY_REFERRAL}
        created = datetime.now(UTC)
        projection = project(
            T.REFERRAL, PAYLOAD_MODELS[T.REFERRAL].model_validate(payload), created
        )
        signed = envelope(
            AT,
            NG,
            T.REFERRAL,
            projection.header_json(),
            case_ref=case_ref,
            consent_ref=consent_ref,
            data_categories=[DataCategory(c) for c in projection.categories_json()],
            payload=payload,
            now=created,
        )
        accepted = await broker.submit(signed)
        assert accepted.status_code == 202, accepted.text
        push = {"envelope": signed, "receipt": accepted.json()["receipt"]}
        withdrawn = await broker.call("POST", f"/v1/consents/{consent_ref}/withdraw", AT)
        assert withdrawn.status_code == 200, withdrawn.text

        database = f"sqlite+aiosqlite:///{tmp_path / 'ng.db'}"
        settings = node_settings(tmp_path, [NG], database, node_alert_poll_seconds=0.2)
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=broker.app), base_url="http://broker"
            ) as to_broker,
            running_node(settings, to_broker) as node,
        ):
            async for _ in polling():  # it learns of the withdrawal from NG's alert
                if await rows(database, WithdrawnConsent):
                    break
            learned = await rows(database, WithdrawnConsent)
            assert [r["consent_ref"] for r in learned] == [consent_ref]
            key = broker.app.state.broker.signing_key
            pushed = await node.post("/inbox", json=push, auth=SignedRequests(key))
            assert pushed.status_code == 200, pushed.text
            (shown,) = await read(node)
        assert (shown["restricted"], shown["payload"]) == (True, None)
        assert shown["notice"].startswith("The person withdrew consent: ")

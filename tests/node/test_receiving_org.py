"""The receiving organisation's own node: it is sent the return plan, sealed to its key, opens
it, answers it and records its contact with the person before travel, through the node's
per-type calls (headers computed from the payload)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.harness import TOKEN, node_settings, running_node, stored_messages
from tests.support import Broker, broker_settings, polling, running_broker
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.domain.projections import project

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
SHELTER = KeySet.generate("ng.shelter")
AUTH = {"authorization": f"Bearer {TOKEN}"}
T = MessageType


@dataclass
class World:
    broker: Broker
    focal: httpx.AsyncClient  # the focal points' node (AT and NG)
    shelter: httpx.AsyncClient  # the shelter's own node, in pull mode
    case_ref: str


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_broker(broker_settings(database_url, tmp_path)) as broker:
        for keyset, country, kind in [
            (AT, "AT", "focal_point"),
            (NG, "NG", "focal_point"),
            (SHELTER, "NG", "receiving_org"),
        ]:  # no inbox URLs: messages wait at the broker until fetched
            assert (await broker.register(keyset, country, kind=kind)).status_code == 201
        focal_db = f"sqlite+aiosqlite:///{tmp_path / 'focal.db'}"
        shelter_db = f"sqlite+aiosqlite:///{tmp_path / 'shelter.db'}"
        transport = httpx.ASGITransport(app=broker.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://broker") as to_broker,
            running_node(node_settings(tmp_path, [AT, NG], focal_db), to_broker) as focal,
            running_node(
                node_settings(
                    tmp_path, [SHELTER], shelter_db, node_pull=True, node_pull_wait_seconds=0.5
                ),
                to_broker,
            ) as shelter,
        ):
            case_ref = f"AT-{datetime.now(UTC):%H%M%S%f}"
            yield World(broker, focal, shelter, case_ref)


async def consent(world: World, recipients: list[KeySet]) -> str:
    body = {
        "id": f"consent-{world.case_ref}",
        "case_ref": world.case_ref,
        "given_by": "person",
        "purposes": [t.value for t in MessageType],
        "recipients": [r.participant for r in recipients],
        "data_categories": [c.value for c in DataCategory],
        "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "form_digest": "sha-256:" + "C" * 43,
    }
    response = await world.broker.call("POST", "/v1/consents", AT, json=body)
    assert response.status_code == 201, response.text
    return str(body["id"])


def message(
    kind: MessageType,
    sender: KeySet,
    recipient: KeySet,
    payload: dict[str, Any],
    consent_ref: str,
    *,
    header: bool = True,
) -> dict[str, Any]:
    """A per-type call's body; the header (unless left out) and categories as the payload
    projects them."""
    projection = project(kind, PAYLOAD_MODELS[kind].model_validate(payload), datetime.now(UTC))
    body: dict[str, Any] = {
        "sender": sender.participant,
        "recipient": recipient.participant,
        "payload": payload,
        "data_categories": projection.categories_json(),
        "consent_ref": consent_ref,
    }
    if header:
        body["header"] = projection.header_json()
    return body


async def call(node: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await node.post(path, json=body, headers=AUTH)


def utc(moment: datetime) -> str:
    """A time as the node writes it in a payload (UTC, ``Z``)."""
    return moment.isoformat().replace("+00:00", "Z")


def plan(now: datetime) -> dict[str, Any]:
    """A return plan with what the receiving organisation prepares for."""
    return {
        "receiving_org": SHELTER.participant,
        "planned_arrival": utc(now + timedelta(days=6)),
        "travel_date": (now + timedelta(days=6)).date().isoformat(),
        "route": [{"mode": "air", "arrival_place": "Lagos"}],
        "escort": {"required": True, "roles": ["social_worker"]},
        "health": {"medical_needs": True, "fit_to_travel": True},
        "reintegration_plan": {"services": ["shelter", "medical_treatment"]},
        "contact_person": "Duty officer, fictional shelter",
        "languages": ["en", "pcm"],
    }


async def prepared(world: World, consent_ref: str, now: datetime) -> None:
    """Referral, acceptance and a risk assessment recommending return."""
    path = f"/cases/{world.case_ref}"
    steps: list[tuple[str, MessageType, KeySet, KeySet, dict[str, Any]]] = [
        ("referral", T.REFERRAL, AT, NG, {"destination_country": "NG", "is_child": False}),
        ("referral-response", T.REFERRAL_RESPONSE, NG, AT, {"accepted": True}),
        (
            "risk-assessment",
            T.RISK_ASSESSMENT,
            NG,
            AT,
            {"risk_level": "low", "recommendation": "return", "assessed_at": now.isoformat()},
        ),
    ]
    for name, kind, sender, recipient, payload in steps:
        sent = await call(
            world.focal, f"{path}/{name}", message(kind, sender, recipient, payload, consent_ref)
        )
        assert sent.status_code == 201, (name, sent.text)
    # The assessment counts for the return once its recipient acknowledged it: AT's node
    # here does not pull, so its answer is given as its node would.
    message_id = sent.json()["message_id"]
    inbox = (await world.broker.call("GET", "/v1/inbox", AT)).json()["items"]
    envelope = next(item["envelope"] for item in inbox if item["message_id"] == message_id)
    await world.broker.acknowledge(envelope)


async def opened_at(node: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    """The message as the node's case workers read it, once its puller has stored it."""
    found: dict[str, Any] | None = None
    async for _ in polling():
        found = next(
            (m for m in await stored_messages(node) if m["message_id"] == message_id), None
        )
        if found is not None:
            break
    assert found is not None, "the message never reached the node"
    return found


async def broker_state(world: World, reader: KeySet) -> dict[str, Any]:
    view = await world.focal.get(
        f"/cases/{world.case_ref}", params={"reader": reader.participant}, headers=AUTH
    )
    assert view.status_code == 200, view.text
    state: dict[str, Any] = view.json()["broker"]["state"]  # the broker's, in the case view
    return state


async def test_the_shelters_node_receives_and_opens_the_plan_then_answers_it(
    world: World,
) -> None:
    now = datetime.now(UTC)
    consent_ref = await consent(world, [NG, SHELTER, AT])
    await prepared(world, consent_ref, now)
    payload = plan(now)

    sent = await call(
        world.focal,
        f"/cases/{world.case_ref}/return-preparation",
        message(T.RETURN_PREPARATION, AT, NG, payload, consent_ref),
    )
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    to_org = answer["to_receiving_org"]
    assert (to_org["recipient"], to_org["sent"], to_org["refused"]) == (
        SHELTER.participant,
        True,
        None,
    )
    assert to_org["message_id"] != answer["message_id"]

    # The shelter's own node fetched the plan and opened it with the shelter's key.
    received = await opened_at(world.shelter, to_org["message_id"])
    assert (received["type"], received["sender"], received["recipient"]) == (
        "return_preparation",
        AT.participant,
        SHELTER.participant,
    )
    assert received["payload"] == payload
    assert received["header"]["receiving_org"] == SHELTER.participant
    assert (await broker_state(world, NG))["plan_sent_to_org"] == to_org["message_id"]
    # ... and the focal points see its node acknowledged it.
    delivery = None
    async for _ in polling():
        view = await world.focal.get(
            f"/cases/{world.case_ref}", params={"reader": NG.participant}, headers=AUTH
        )
        at_broker = view.json()["broker"]["timeline"]
        timeline = {item["message_id"]: item for item in at_broker}
        delivery = timeline[to_org["message_id"]]["delivery_status"]
        if delivery == "acknowledged":
            break
    assert delivery == "acknowledged"

    # It answers, and records its contact with the person, with payloads only.
    answered = await call(
        world.shelter,
        f"/cases/{world.case_ref}/reception-plan-response",
        message(
            T.RECEPTION_PLAN_RESPONSE,
            SHELTER,
            AT,
            {"readiness": "needs_support", "needs": ["medical_treatment"]},
            consent_ref,
            header=False,
        ),
    )
    assert answered.status_code == 201, answered.text
    contacted_at = (now - timedelta(minutes=30)).isoformat()
    met = await call(
        world.shelter,
        f"/cases/{world.case_ref}/pre-departure-contact",
        message(
            T.PRE_DEPARTURE_CONTACT,
            SHELTER,
            NG,
            {"contacted_at": contacted_at, "mode": "phone", "counselling_given": True},
            consent_ref,
            header=False,
        ),
    )
    assert met.status_code == 201, met.text
    state = await broker_state(world, AT)
    assert (state["stage"], state["readiness"]) == ("return_prepared", "needs_support")
    assert datetime.fromisoformat(state["pre_departure_contact_at"]) == datetime.fromisoformat(
        contacted_at
    )


async def test_no_one_but_the_organisation_answers_the_plan(world: World) -> None:
    now = datetime.now(UTC)
    consent_ref = await consent(world, [NG, SHELTER, AT])
    await prepared(world, consent_ref, now)
    sent = await call(
        world.focal,
        f"/cases/{world.case_ref}/return-preparation",
        message(T.RETURN_PREPARATION, AT, NG, plan(now), consent_ref),
    )
    assert sent.status_code == 201, sent.text
    ready = {"readiness": "ready"}
    forged = await call(
        world.focal,
        f"/cases/{world.case_ref}/reception-plan-response",
        message(T.RECEPTION_PLAN_RESPONSE, NG, AT, ready, consent_ref, header=False),
    )
    assert forged.status_code == 409, forged.text
    assert forged.json()["rule"] == "reception_plan_response_only_by_designated_receiving_org"
    assert (await broker_state(world, AT))["readiness"] is None


async def test_a_plan_the_broker_refuses_for_the_organisation_is_said_and_the_first_stands(
    world: World,
) -> None:
    now = datetime.now(UTC)
    consent_ref = await consent(world, [NG, AT])  # the shelter is not named
    await prepared(world, consent_ref, now)
    sent = await call(
        world.focal,
        f"/cases/{world.case_ref}/return-preparation",
        message(T.RETURN_PREPARATION, AT, NG, plan(now), consent_ref),
    )
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    to_org = answer["to_receiving_org"]
    # The second was queued after the first, then refused: its id and state are known.
    assert (to_org["sent"], to_org["status"]) == (False, "refused")
    assert to_org["message_id"] not in (None, answer["message_id"])
    refused = to_org["refused"]
    assert (refused["status"], refused["broker_status"], refused["gaps"]) == (
        403,
        403,
        ["recipient"],
    )
    assert refused["type"] == "urn:trm-broker:problem:broker-refused"
    assert SHELTER.participant in refused["detail"]
    assert answer["message_id"] in refused["detail"]
    # The case worker finds it in the outbox with the broker's reasons.
    followed = await world.focal.get(f"/outbox/{to_org['message_id']}", headers=AUTH)
    assert followed.status_code == 200, followed.text
    assert followed.json()["state"] == "refused"
    assert followed.json()["refused"]["gaps"] == ["recipient"]
    state = await broker_state(world, AT)
    assert (state["stage"], state["receiving_org"], state["plan_sent_to_org"]) == (
        "return_prepared",
        SHELTER.participant,
        None,
    )

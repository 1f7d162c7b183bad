"""The receiving organisation with its own node, as real processes: the shelter's node
receives the return plan, opens it with the shelter's key, answers it ready, records the
contact with the person before travel and confirms the reception; both focal points see it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, consent_body
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.domain.projections import project

pytestmark = pytest.mark.e2e

T = MessageType
CASE = "AT-2026-E2E-ORG"


def utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def post(node: Node, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        node.url + path,
        json=body,
        # A send waits for the broker's receipt or refusal (RFC 7240), not only the 202.
        headers={"authorization": f"Bearer {node.api_token}", "prefer": "wait=10"},
        timeout=20,
    )


def send(
    node: Node, path: str, kind: MessageType, sender: str, to: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """One per-type call; header and data categories as the payload projects them."""
    projection = project(kind, PAYLOAD_MODELS[kind].model_validate(payload), datetime.now(UTC))
    body = {
        "sender": sender,
        "recipient": to,
        "header": projection.header_json(),
        "payload": payload,
        "data_categories": projection.categories_json(),
        "consent_ref": f"consent-{CASE}",
    }
    response = post(node, f"/cases/{CASE}/{path}", body)
    assert response.status_code == 201, (path, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def test_the_shelters_own_node_receives_opens_and_answers_the_plan(
    tmp_path: Path, broker_database: str | None
) -> None:
    with LocalCluster(tmp_path, broker_database_url=broker_database) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT])
        shelter = cluster.start_node("node-shelter", [SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG")
        demo.register(cluster, shelter, "NG", kinds={SHELTER: "receiving_org"})
        now = datetime.now(UTC)
        consent = consent_body(CASE, f"consent-{CASE}", now)
        consent["data_categories"] = [c.value for c in DataCategory]  # what the plan holds
        assert post(at, "/consents", {"consent": consent}).status_code == 201

        send(at, "referral", T.REFERRAL, SENDER, RECIPIENT, {"destination_country": "NG"})
        send(ng, "referral-response", T.REFERRAL_RESPONSE, RECIPIENT, SENDER, {"accepted": True})
        assessment = {"risk_level": "low", "recommendation": "return", "assessed_at": utc(now)}
        assessed = send(ng, "risk-assessment", T.RISK_ASSESSMENT, RECIPIENT, SENDER, assessment)
        demo.wait_acknowledged(cluster, assessed["message_id"], ng)  # now it counts
        plan = {
            "receiving_org": SHELTER,
            "planned_arrival": utc(now + timedelta(days=5)),
            "escort": {"required": True, "roles": ["social_worker"]},
            "reintegration_plan": {"services": ["shelter", "psychological_support"]},
            "languages": ["en", "pcm"],
        }
        sent = send(at, "return-preparation", T.RETURN_PREPARATION, SENDER, RECIPIENT, plan)
        to_shelter = sent["to_receiving_org"]
        assert (to_shelter["recipient"], to_shelter["sent"]) == (SHELTER, True)

        # The shelter's node, and only it, holds the plan sent to the shelter, opened.
        opened = demo.wait_received(shelter, to_shelter["message_id"])
        assert (opened["type"], opened["sender"], opened["recipient"]) == (
            "return_preparation",
            SENDER,
            SHELTER,
        )
        assert opened["payload"] == plan
        assert demo.wait_received(ng, sent["message_id"])["payload"] == plan

        # Before travel: the shelter answers the plan and meets the person; then receives.
        ready = send(
            shelter,
            "reception-plan-response",
            T.RECEPTION_PLAN_RESPONSE,
            SHELTER,
            SENDER,
            {"readiness": "ready"},
        )
        contact = {"contacted_at": utc(now), "mode": "video", "counselling_given": True}
        met = send(
            shelter, "pre-departure-contact", T.PRE_DEPARTURE_CONTACT, SHELTER, RECIPIENT, contact
        )
        reception = {"outcome": "received", "received_at": utc(datetime.now(UTC))}
        received = send(
            shelter,
            "reception-confirmation",
            T.RECEPTION_CONFIRMATION,
            SHELTER,
            SENDER,
            reception,
        )
        for message_id, reader in [
            (to_shelter["message_id"], at),
            (ready["message_id"], at),
            (met["message_id"], ng),
            (received["message_id"], at),
        ]:
            assert demo.wait_acknowledged(cluster, message_id, reader)["status"] == "acknowledged"

        # Both focal points see the shelter was sent the plan, answered it and met the person.
        for node in (at, ng):
            view = httpx.get(
                f"{node.url}/cases/{CASE}",
                headers={"authorization": f"Bearer {node.api_token}"},
                timeout=10,
            ).json()["broker"]  # the broker's, within the node's case view
            state = view["state"]
            assert view["stage"] == "received"
            assert (state["plan_sent_to_org"], state["readiness"]) == (
                to_shelter["message_id"],
                "ready",
            )
            assert state["pre_departure_contact_at"] is not None
            to_org = [i for i in view["timeline"] if i["message_id"] == to_shelter["message_id"]]
            assert [(i["recipient"], i["delivery_status"]) for i in to_org] == [
                (SHELTER, "acknowledged")
            ]
        at_messages = httpx.get(
            at.url + "/messages", headers={"authorization": f"Bearer {at.api_token}"}, timeout=10
        ).json()["messages"]
        assert [m["type"] for m in at_messages if m["sender"] == SHELTER] == [
            "reception_plan_response",
            "reception_confirmation",
        ]

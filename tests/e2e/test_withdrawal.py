"""Withdrawal reaches every party, with real processes: the person withdraws consent after the
return plan went to Nigeria's focal point and to the shelter; both are alerted, both nodes
show what they received under it restricted (the shelter's, which gets no withdrawal
message, from its alert), and an auditor's search by country finds the withdrawal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, consent_body
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.domain.projections import project
from trm_broker.web.signed_requests import SignedRequests

pytestmark = pytest.mark.e2e

T = MessageType
CASE = "AT-2026-E2E-WDRAW"
CONSENT = f"consent-{CASE}"
CANARY = "CANARY5E2EWDRAW"


def utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
        "consent_ref": CONSENT,
    }
    response = httpx.post(
        f"{node.url}/cases/{CASE}/{path}",
        json=body,
        # Wait for the broker's receipt (RFC 7240), not only the outbox's 202.
        headers={"authorization": f"Bearer {node.api_token}", "prefer": "wait=10"},
        timeout=20,
    )
    assert response.status_code == 201, (path, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def messages(node: Node) -> list[dict[str, Any]]:
    response = httpx.get(
        node.url + "/messages", headers={"authorization": f"Bearer {node.api_token}"}, timeout=5
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


def restricted(node: Node, message_ids: list[str]) -> list[dict[str, Any]]:
    """The node's view of these messages once each is restricted."""

    def check() -> list[dict[str, Any]] | None:
        shown = [m for m in messages(node) if m["message_id"] in message_ids]
        done = len(shown) == len(message_ids) and all(m["restricted"] for m in shown)
        return shown if done else None

    return demo.eventually(f"the restriction at {node.process.name}", check)


def signed_get(cluster: LocalCluster, path: str, key: KeySet) -> dict[str, Any]:
    assert cluster.broker is not None
    response = httpx.get(cluster.broker.url + path, auth=SignedRequests(key.signing), timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_withdrawal_reaches_every_party_and_their_nodes_restrict_the_data(
    tmp_path: Path, broker_database: str | None
) -> None:
    fast = {"TRM_NODE_ALERT_POLL_SECONDS": "0.5"}
    with LocalCluster(tmp_path, broker_database_url=broker_database, extra_env=fast) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT])
        shelter = cluster.start_node("node-shelter", [SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG")
        demo.register(cluster, shelter, "NG", kinds={SHELTER: "receiving_org"})
        auditor = KeySet.read(demo.register_auditor(cluster, "at.rapporteur", "AT"))
        now = datetime.now(UTC)
        consent = consent_body(CASE, CONSENT, now)
        consent["data_categories"] = [c.value for c in DataCategory]
        registered = httpx.post(
            at.url + "/consents",
            json={"consent": consent},
            headers={"authorization": f"Bearer {at.api_token}"},
            timeout=15,
        )
        assert registered.status_code == 201, registered.text

        referral = {"destination_country": "NG", "identification_summary": CANARY}
        sent_referral = send(at, "referral", T.REFERRAL, SENDER, RECIPIENT, referral)
        send(ng, "referral-response", T.REFERRAL_RESPONSE, RECIPIENT, SENDER, {"accepted": True})
        assessment = {"risk_level": "low", "recommendation": "return", "assessed_at": utc(now)}
        assessed = send(ng, "risk-assessment", T.RISK_ASSESSMENT, RECIPIENT, SENDER, assessment)
        demo.wait_acknowledged(cluster, assessed["message_id"], ng)  # now it counts
        plan = {
            "receiving_org": SHELTER,
            "planned_arrival": utc(now + timedelta(days=5)),
            "contact_person": f"Duty officer {CANARY}",
        }
        sent_plan = send(at, "return-preparation", T.RETURN_PREPARATION, SENDER, RECIPIENT, plan)
        to_shelter = sent_plan["to_receiving_org"]["message_id"]
        at_ng = [sent_referral["message_id"], sent_plan["message_id"]]
        for message_id in at_ng:
            demo.wait_received(ng, message_id)
        assert demo.wait_received(shelter, to_shelter)["payload"] == plan

        # The person withdraws: Austria tells Nigeria's focal point; the shelter gets no message.
        notice = send(at, "consent-withdrawal", T.CONSENT_WITHDRAWAL, SENDER, RECIPIENT, {})
        assert demo.wait_received(ng, notice["message_id"])["restricted"] is False

        # Both are alerted at the broker, each by an alert naming it.
        for node in (ng, shelter):
            (key,) = node.keysets
            alerts = signed_get(cluster, f"/v1/alerts?case_ref={CASE}", key)["alerts"]
            assert [(a["kind"], a["parties"]) for a in alerts] == [
                ("consent_withdrawn", [key.participant, SENDER])
            ]
        # Both nodes show what they received under it restricted, content withheld.
        for node, ids in ((ng, at_ng), (shelter, [to_shelter])):
            for message in restricted(node, ids):
                assert message["payload"] is None
                assert message["notice"].startswith("The person withdrew consent: ")
                assert message["delete_after"] is not None
            listing = httpx.get(
                node.url + "/messages",
                headers={"authorization": f"Bearer {node.api_token}"},
                timeout=5,
            )
            assert CANARY not in listing.text
        assert [m["type"] for m in messages(shelter)] == ["return_preparation"]

        # An auditor searching by the country of return finds the withdrawal.
        def found() -> list[dict[str, Any]] | None:
            query = "/v1/ledger/search?country=NG&type=consent.withdrawn"
            entries = signed_get(cluster, query, auditor)["entries"]
            return [e["entry"] for e in entries] or None

        (entry,) = demo.eventually("the consent.withdrawn entry", found)
        assert (entry["consent_id"], entry["countries"]) == (CONSENT, ["AT", "NG"])
        assert entry["notified"] == sorted([RECIPIENT, SHELTER])

        cluster.stop()
        logs = "".join(p.log_text() for p in cluster.processes)
    assert "consent_withdrawal_learned" in logs
    assert CANARY not in logs

"""The node as a case system (issue 18), as a new user meets it, with real processes.

Nigeria runs one node for two organisations, its focal point (NAPTIP) and a shelter, each
with its own case worker made by `trm-broker node users add`; Austria runs its own node.
Every step below goes through the nodes' local API only; no one signs a request to the
broker by hand:

- Austria sends a referral and sees, at its node, the broker receipt it, deliver it and
  Nigeria's node acknowledge it, each change with its time (`GET /sent/{id}`);
- NAPTIP's case worker reads it with the consent it came under and what they may send next,
  and replies without copying an id: the node fills in the one consent that covers the reply;
- Austria's case view joins the referral it sent (acknowledged) and the reply it received;
- the shelter's case worker, on the same node, sees none of NAPTIP's messages, cannot read
  them by id, and cannot send as NAPTIP.

That nothing is lost across a broker outage and node SIGKILLs is proven by
tests/e2e/test_delivery_node_outbox.py (its counts printed; long in `make chaos`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, consent_body

pytestmark = pytest.mark.e2e

CASE = "AT-2026-E2E-NODE"
CONSENT = f"consent-{CASE}"
#: The order a message's statuses come in at its sender's node (a step may be seen or not).
ORDER = ["queued", "accepted", "delivered", "acknowledged"]
#: How long a step may take to reach its final status on a loaded machine.
WAIT = 60.0


def call(
    node: Node, organisation: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """A call by ``organisation``'s case worker, with their own token; a send waits for the
    broker's receipt (RFC 7240 ``Prefer: wait``)."""
    return httpx.request(
        method,
        node.url + path,
        json=body,
        headers={"authorization": f"Bearer {node.token_for(organisation)}", "prefer": "wait=10"},
        timeout=20,
    )


def read(node: Node, organisation: str, path: str) -> dict[str, Any]:
    response = call(node, organisation, "GET", path)
    assert response.status_code == 200, (path, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def eventually(check: Callable[[], dict[str, Any] | None], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def acknowledged_at(node: Node, organisation: str, message_id: str) -> dict[str, Any]:
    """The sent message as its sender's node shows it, once acknowledged."""

    def fate() -> dict[str, Any] | None:
        sent = read(node, organisation, f"/sent/{message_id}")
        return sent if sent["status"] == "acknowledged" else None

    return eventually(fate, f"{message_id} acknowledged at its sender's node")


def test_a_node_serves_two_organisations_each_seeing_its_messages_fate_and_replying_without_ids(
    tmp_path: Path, broker_database: str | None
) -> None:
    env = {"TRM_NODE_STATUS_POLL_SECONDS": "1"}
    with LocalCluster(tmp_path, broker_database_url=broker_database, extra_env=env) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT, SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG", kinds={SHELTER: "receiving_org"})
        consent = consent_body(CASE, CONSENT, datetime.now(UTC))
        assert call(at, SENDER, "POST", "/consents", {"consent": consent}).status_code == 201

        # Austria refers the case; a referral names its consent (its case is new).
        sent = call(
            at,
            SENDER,
            "POST",
            f"/cases/{CASE}/referral",
            {
                "sender": SENDER,
                "recipient": RECIPIENT,
                "payload": {"destination_country": "NG", "form_of_exploitation": "forced_labour"},
                "consent_ref": CONSENT,
            },
        )
        assert sent.status_code == 201, sent.text
        referral = sent.json()["message_id"]

        # Its fate, at Austria's node: receipted, delivered, acknowledged, each with a time.
        fate = acknowledged_at(at, SENDER, referral)
        assert fate["final"] is True
        assert fate["receipt"]["message_id"] == referral
        assert fate["accepted_at"] is not None
        assert fate["answered_at"] is not None
        changes = [change["status"] for change in fate["changes"]]
        assert "accepted" in changes
        assert changes == sorted(changes, key=ORDER.index)
        assert changes[-1] == "acknowledged"
        assert all(change["seen_at"] for change in fate["changes"])

        # NAPTIP reads it: the consent it came under, and what NAPTIP may send next.
        received = read(ng, RECIPIENT, f"/messages/{referral}")
        assert received["consent_ref"] == CONSENT
        assert received["payload"]["form_of_exploitation"] == "forced_labour"
        steps = {step["type"]: step for step in received["next_steps"]}
        assert steps["referral_response"]["allowed"] is True
        assert steps["referral_response"]["consents"] == [CONSENT]

        # NAPTIP replies without copying any id: the node fills in the consent.
        replied = call(
            ng,
            RECIPIENT,
            "POST",
            f"/cases/{CASE}/referral-response",
            {"sender": RECIPIENT, "recipient": SENDER, "payload": {"accepted": True}},
        )
        assert replied.status_code == 201, replied.text
        reply = replied.json()["message_id"]
        acknowledged_at(ng, RECIPIENT, reply)

        def reply_received() -> dict[str, Any] | None:
            response = call(at, SENDER, "GET", f"/messages/{reply}")
            return response.json() if response.status_code == 200 else None

        assert eventually(reply_received, "the reply at Austria's node")["consent_ref"] == CONSENT

        # Austria's case view joins what it sent and what it received.
        view = read(at, SENDER, f"/cases/{CASE}")
        timeline = {item["message_id"]: item for item in view["timeline"]}
        assert (timeline[referral]["direction"], timeline[referral]["status"]) == (
            "sent",
            "acknowledged",
        )
        assert timeline[reply]["direction"] == "received"
        assert [c["id"] for c in view["consents"]] == [CONSENT]

        # The shelter, on the same node, never reads or sends as NAPTIP.
        shelter_sees = [m["message_id"] for m in read(ng, SHELTER, "/messages")["messages"]]
        assert referral not in shelter_sees
        assert call(ng, SHELTER, "GET", f"/messages/{referral}").status_code == 404
        assert call(ng, SHELTER, "GET", f"/sent/{reply}").status_code == 404
        assert read(ng, SHELTER, "/sent")["messages"] == []
        as_naptip = call(
            ng,
            SHELTER,
            "POST",
            f"/cases/{CASE}/referral-response",
            {"sender": RECIPIENT, "recipient": SENDER, "payload": {"accepted": True}},
        )
        assert as_naptip.status_code == 403, as_naptip.text
        assert as_naptip.headers["content-type"].startswith("application/problem+json")

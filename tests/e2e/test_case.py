"""The demo's whole case with real processes, on SQLite and PostgreSQL: every step accepted
and delivered in order, the two refusals explained, the case closed, the ledger verified."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import RECIPIENT, SENDER, SHELTER, play_case

pytestmark = pytest.mark.e2e


def test_a_whole_case_goes_through_real_nodes(tmp_path: Path, broker_database: str | None) -> None:
    # The nodes read their sent messages' statuses at the broker often (as the tests wait).
    fast = {"TRM_NODE_STATUS_POLL_SECONDS": "0.5"}
    with LocalCluster(tmp_path, broker_database_url=broker_database, extra_env=fast) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = cluster.start_node("node-ng", [RECIPIENT, SHELTER])
        demo.register(cluster, at, "AT")
        demo.register(cluster, ng, "NG", kinds={SHELTER: "receiving_org"})
        auditor_key = demo.register_auditor(cluster, "at.rapporteur", "AT")

        case = play_case(at, ng, "AT-2026-E2E-CASE", echo=lambda _: None)

        assert [label for label, _ in case.sent] == [
            "referral",
            "acceptance",
            "risk assessment",
            "return preparation",
            "return plan to shelter",
            "plan answered: ready",
            "pre-departure contact",
            "reception confirmation",
            "monitoring report",
            "closure",
        ]
        problems = [problem for _, problem in case.refusals]
        assert [p["broker_problem"] for p in problems] == [
            "urn:trm-broker:problem:workflow-rule",
            "urn:trm-broker:problem:consent-refused",
        ]
        assert problems[0]["rule"]
        assert problems[1]["gaps"] == ["data_categories"]
        for _, message_id in case.sent:
            status = demo.wait_acknowledged(cluster, message_id, at)
            assert status["delivery"]["attempts"] >= 1
        # The sending node knows it too, by itself: each message's fate at its own `GET /sent`.
        for _, message_id in case.sent:
            seen = demo.eventually(
                "the sending node's record of the acknowledgement",
                partial(_acknowledged_at_its_node, message_id, at, ng),
            )
            assert [c["status"] for c in seen["changes"]][-1] == "acknowledged"
            assert seen["receipt"]["message_id"] == message_id

        # Nigeria's node holds what was sent to its two participants, in arrival order.
        received = httpx.get(
            ng.url + "/messages", headers={"authorization": f"Bearer {ng.api_token}"}
        ).json()["messages"]
        assert [(m["type"], m["recipient"]) for m in received if m["recipient"] == SHELTER] == [
            ("return_preparation", SHELTER)  # the plan, sealed to the shelter's own key
        ]
        assert [m["type"] for m in received if m["recipient"] == RECIPIENT] == [
            "referral",
            "return_preparation",
            "case_closure",
        ]
        case_view = httpx.get(
            f"{at.url}/cases/{case.case_ref}",
            headers={"authorization": f"Bearer {at.api_token}"},
        ).json()
        view = case_view["broker"]  # the broker's, within the node's case view
        assert case_view["stage"] == view["stage"] == "closed"
        assert len(view["timeline"]) == 10
        assert view["state"]["readiness"] == "ready"
        assert view["state"]["plan_sent_to_org"] == dict(case.sent)["return plan to shelter"]
        checkpoint = demo.verify_ledger(cluster, auditor_key, 6 + 2 * len(case.sent))
        assert checkpoint.size >= 20


def _acknowledged_at_its_node(message_id: str, *nodes: Node) -> dict[str, Any] | None:
    """The message as the node that sent it shows it, once acknowledged there."""
    for node in nodes:
        response = httpx.get(
            f"{node.url}/sent/{message_id}",
            headers={"authorization": f"Bearer {node.api_token}"},
            timeout=5,
        )
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found if found["status"] == "acknowledged" else None
    raise AssertionError(f"no node says it sent {message_id}")

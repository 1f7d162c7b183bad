"""Pull mode and dead letters with real processes: a node the broker cannot reach is never
pushed to; a message nobody fetches becomes a dead letter; the operator's CLI lists it and
re-queues it; the node, now pulling, stores it once and the broker records it acknowledged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from trm_broker.cli import app
from trm_broker.crypto.keys import KeySet
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster
from trm_broker.dev.demo_case import RECIPIENT, SENDER
from trm_broker.web.signed_requests import SignedRequests

pytestmark = pytest.mark.e2e

PAYLOAD = {"destination_country": "NG", "form_of_exploitation": "forced_labour"}


def test_an_unfetched_message_is_dead_lettered_requeued_and_then_pulled_once(
    tmp_path: Path,
) -> None:
    env = {"TRM_DELIVERY_MAX_AGE_SECONDS": "4", "TRM_INBOX_MAX_WAIT_SECONDS": "5"}
    with LocalCluster(tmp_path, extra_env=env) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker()
        at = cluster.start_node("at-node", [SENDER])
        demo.register(cluster, at, "AT")
        ng_keys = KeySet.generate(RECIPIENT)
        ng_keys.write(tmp_path / f"{RECIPIENT}.keys.json")
        assert cluster.operator is not None
        registered = httpx.post(  # no inbox URL: pull mode
            broker.url + "/v1/participants",
            json={
                "id": RECIPIENT,
                "kind": "focal_point",
                "country": "NG",
                "keys": ng_keys.public(),
                "statements": demo.stated(cluster.operator, ng_keys),
            },
            auth=SignedRequests(cluster.operator.signing),
            timeout=10,
        )
        assert registered.status_code == 201, registered.text

        sent = demo.send_referral(at, "AT-PULL-0001", PAYLOAD)
        message_id = sent["message_id"]
        status_url = f"{broker.url}/v1/messages/{message_id}"
        sender = SignedRequests(at.keysets[0].signing)

        def status() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(status_url, auth=sender, timeout=5).json()
            return body

        dead = demo.eventually(
            "the dead letter", lambda: s if (s := status())["status"] == "dead_lettered" else None
        )
        assert dead["delivery"]["attempts"] == 0  # never pushed: the recipient pulls

        signed = [
            "--broker-url",
            broker.url,
            "--operator-key",
            str(tmp_path / "operator-key.json"),
        ]
        listed = CliRunner().invoke(app, ["deliveries", "dead-letters", "--json", *signed])
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert [(r["message_id"], r["recipient"]) for r in rows] == [(message_id, RECIPIENT)]

        # The node comes up pulling; nothing is offered until the operator re-queues.
        cluster.extra_env["TRM_NODE_PULL"] = "true"
        cluster.extra_env["TRM_NODE_PULL_WAIT_SECONDS"] = "2"
        ng = cluster.start_node("ng-node", [RECIPIENT])
        requeued = CliRunner().invoke(
            app, ["deliveries", "requeue", "--recipient", RECIPIENT, *signed]
        )
        assert requeued.exit_code == 0, requeued.output
        assert f"{message_id} re-queued" in requeued.output

        received = demo.wait_received(ng, message_id)
        assert received["payload"] == PAYLOAD
        final = demo.eventually(
            "the acknowledgement",
            lambda: s if (s := status())["status"] == "acknowledged" else None,
        )
        assert final["delivery"]["fetched_at"] is not None
        messages = httpx.get(
            ng.url + "/messages",
            headers={"authorization": f"Bearer {ng.api_token}"},
            timeout=5,
        ).json()["messages"]
        assert [m["message_id"] for m in messages] == [message_id]  # stored once
        alerts = httpx.get(broker.url + "/v1/alerts", auth=sender, timeout=5).json()["alerts"]
        assert [a["kind"] for a in alerts] == []  # the dead-letter alert closed

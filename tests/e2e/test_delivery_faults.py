"""A faulty recipient node, with real processes on SQLite and PostgreSQL: timeouts, connection
resets, HTTP 500s and answers that are not the recipient's valid acknowledgement of this
message are all retried and never count as delivered; once the node behaves, each message is
delivered, stored at the node and acknowledged exactly once.

A proxy in the test process (``faults.FaultyInbox``) stands between the broker and the real
recipient node: the recipient is registered with the proxy's inbox URL, and the node's public
URL is the proxy's, so the broker's signature (which covers the URL it pushed to) verifies at
the node when the proxy forwards. Each message travels in its own case, with its own fault.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.e2e.faults import FaultyInbox
from tests.e2e.load import chaos_scale
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.dev.demo_case import DEMO_REFERRAL, RECIPIENT, SENDER
from trm_broker.domain.ledger_events import EventType
from trm_broker.store.database import create_engine
from trm_broker.store.models import LedgerEntry
from trm_broker.web.signed_requests import SignedRequests

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 1.0
BROKER_TIMINGS = {
    "TRM_DELIVERY_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
    "TRM_DELIVERY_BACKOFF_MAX_SECONDS": "1",
    "TRM_DELIVERY_POLL_SECONDS": "0.2",
}

#: fault mode -> (the broker's last_error for it, whether the proxy forwards to the node)
FAULTS: dict[str, tuple[str, bool]] = {
    "timeout": ("timeout", False),
    "reset": ("transport_", False),  # ReadError or RemoteProtocolError, as the OS reports it
    "http_500": ("http_500", False),
    "malformed": ("ack_malformed", False),
    "oversized": ("ack_too_large", False),
    "bad_signature": ("ack_bad_signature", True),
    "wrong_message": ("ack_mismatch", True),
    "wrong_signer": ("ack_unknown_key", True),
}


class FastCluster(LocalCluster):
    """The dev cluster with delivery timings short enough to see several retries quickly."""

    def broker_env(self) -> dict[str, str]:
        env = super().broker_env()
        env.update(BROKER_TIMINGS)
        return env


def case_ref(mode: str) -> str:
    return "AT-2026-FAULT-" + mode.upper().replace("_", "-")


def error_matches(error: object, expected: str) -> bool:
    if not isinstance(error, str):
        return False
    return error.startswith(expected) if expected.endswith("_") else error == expected


def start_recipient_behind(cluster: LocalCluster, proxy: FaultyInbox) -> Node:
    """The recipient's node, whose public URL is the proxy's (the URL the broker signs)."""
    cluster.extra_env["TRM_NODE_PUBLIC_URL"] = proxy.url
    try:
        node = cluster.start_node("node-ng", [RECIPIENT])
    finally:
        del cluster.extra_env["TRM_NODE_PUBLIC_URL"]
    proxy.upstream = node.inbox_url
    return node


def register_at(cluster: LocalCluster, node: Node, country: str, inbox_url: str) -> None:
    assert cluster.broker is not None
    assert cluster.operator is not None
    for keyset in node.keysets:
        response = httpx.post(
            cluster.broker.url + "/v1/participants",
            json={
                "id": keyset.participant,
                "kind": "focal_point",
                "country": country,
                "inbox_url": inbox_url,
                "keys": keyset.public(),
                "statements": demo.stated(cluster.operator, keyset),
            },
            auth=SignedRequests(cluster.operator.signing),
            timeout=10,
        )
        response.raise_for_status()


def message_status(cluster: LocalCluster, sender: Node, message_id: str) -> dict[str, Any]:
    assert cluster.broker is not None
    response = httpx.get(
        f"{cluster.broker.url}/v1/messages/{message_id}",
        auth=SignedRequests(sender.keysets[0].signing),
        timeout=5,
    )
    response.raise_for_status()
    status: dict[str, Any] = response.json()
    return status


def stored_at(node: Node) -> Counter[str]:
    """How many times the node holds each message id."""
    response = httpx.get(
        node.url + "/messages",
        params={"limit": 500},
        headers={"authorization": f"Bearer {node.api_token}"},
        timeout=5,
    )
    response.raise_for_status()
    return Counter(m["message_id"] for m in response.json()["messages"])


def ledger_acknowledgements(cluster: LocalCluster) -> Counter[str]:
    """message.acknowledged ledger entries per case."""

    async def read() -> list[tuple[str | None, int]]:
        engine = create_engine(cluster.database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    select(LedgerEntry.case_ref, func.count())
                    .where(LedgerEntry.type == EventType.MESSAGE_ACKNOWLEDGED.value)
                    .group_by(LedgerEntry.case_ref)
                )
                return [(ref, int(n)) for ref, n in rows.all()]
        finally:
            await engine.dispose()

    return Counter({ref: n for ref, n in asyncio.run(read()) if ref is not None})


def logged_acknowledgements(cluster: LocalCluster) -> Counter[str]:
    """The broker's delivery_acknowledged log events per message id."""
    assert cluster.broker is not None
    counts: Counter[str] = Counter()
    for line in cluster.broker.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "delivery_acknowledged":
            counts[str(event.get("message_id"))] += 1
    return counts


def wait_for(
    what: str, check: Callable[[], bool], state: Callable[[], object], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {state()}")
        time.sleep(0.2)


#: The normal suite runs it on SQLite (its time is counted); `make chaos` on PostgreSQL too.
BACKENDS = ["sqlite", "postgresql"] if chaos_scale() > 1 else ["sqlite"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_faulty_node_is_retried_until_it_acknowledges_once(
    tmp_path: Path, backend: str, broker_database: str | None
) -> None:
    started = time.monotonic()
    with (
        FaultyInbox(hold_seconds=TIMEOUT_SECONDS + 2) as proxy,
        FastCluster(tmp_path, broker_database_url=broker_database) as cluster,
    ):
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker()
        at = cluster.start_node("node-at", [SENDER])
        ng = start_recipient_behind(cluster, proxy)
        proxy.other_signer = at.keysets[0].signing  # registered, but not the recipient
        demo.register(cluster, at, "AT")
        register_at(cluster, ng, "NG", proxy.url + "/inbox")

        # Through the proxy in pass mode, a message goes straight through: the path works,
        # and its ack is the one a "wrong_message" answer replays later.
        first = demo.send_referral(at, case_ref("pass"), DEMO_REFERRAL)["message_id"]
        status = demo.wait_acknowledged(cluster, first, at)
        assert status["delivery"]["attempts"] == 1
        assert first in proxy.acks

        # One message per fault, each in its own case (a case's messages go in order).
        sent: dict[str, str] = {}
        for mode in FAULTS:
            proxy.set_mode(case_ref(mode), mode)
            sent[mode] = demo.send_referral(at, case_ref(mode), DEMO_REFERRAL)["message_id"]

        # Every fault is retried (two attempts or more, each failing with its error code),
        # and none is counted as delivered.
        faulty: dict[str, dict[str, Any]] = {}
        latest: dict[str, dict[str, Any]] = {}

        def all_retried() -> bool:
            for mode, message_id in sent.items():
                if mode in faulty:
                    continue
                status = latest[mode] = message_status(cluster, at, message_id)
                assert status["status"] != "acknowledged", f"{mode}: counted as delivered"
                assert status["delivery"]["status"] == "pending", (mode, status)
                delivery = status["delivery"]
                if delivery["attempts"] >= 2 and error_matches(
                    delivery["last_error"], FAULTS[mode][0]
                ):
                    faulty[mode] = status
            return len(faulty) == len(sent)

        wait_for(
            "every fault to be retried",
            all_retried,
            lambda: {m: s["delivery"] for m, s in latest.items() if m not in faulty},
        )
        stored_during_faults = stored_at(ng)
        for mode, message_id in sent.items():
            forwarded = FAULTS[mode][1]
            assert stored_during_faults[message_id] == (1 if forwarded else 0), mode
            assert not any(p.genuine_ack for p in proxy.pushes_of(case_ref(mode))), mode

        # The node behaves again: each message is delivered and acknowledged.
        for mode in FAULTS:
            proxy.set_mode(case_ref(mode), "pass")
        final = {mode: demo.wait_acknowledged(cluster, mid, at) for mode, mid in sent.items()}

        # Nothing more is pushed once acknowledged (longer than a backoff and a poll).
        counts = {mode: len(proxy.pushes_of(case_ref(mode))) for mode in sent}
        time.sleep(1.5)
        assert counts == {mode: len(proxy.pushes_of(case_ref(mode))) for mode in sent}

        stored = stored_at(ng)
        ledger = ledger_acknowledgements(cluster)
        logged = logged_acknowledgements(cluster)
        print()
        for mode, message_id in sent.items():
            pushes = proxy.pushes_of(case_ref(mode))
            modes = [p.mode for p in pushes]
            faults = modes.count(mode)
            delivery = final[mode]["delivery"]
            print(
                f"{mode:<14} last_error={faulty[mode]['delivery']['last_error']:<30} "
                f"faulty attempts={faults} "
                f"acks passed during faults={sum(p.genuine_ack for p in pushes[:faults])} "
                f"stored at node during faults={stored_during_faults[message_id]} | "
                f"then: attempts={delivery['attempts']} status={final[mode]['status']} "
                f"genuine acks={sum(p.genuine_ack for p in pushes)} "
                f"stored at node={stored[message_id]} ledger acks={ledger[case_ref(mode)]}"
            )
            # Every attempt the broker counted reached the proxy, and only the last one, the
            # first in pass mode, ended the delivery: no faulty answer was taken as an ack.
            assert modes == [mode] * faults + ["pass"], (mode, modes)
            assert faults >= 2, mode
            assert delivery["attempts"] == len(pushes), (mode, delivery)
            assert final[mode]["status"] == "acknowledged"
            assert delivery["status"] == "acknowledged"
            assert delivery["last_error"] is None
            assert pushes[-1].genuine_ack
            assert stored[message_id] == 1, mode
            assert ledger[case_ref(mode)] == 1, mode
            assert logged[message_id] == 1, mode
        assert stored[first] == 1
        assert ledger[case_ref("pass")] == 1
        assert sum(stored.values()) == len(sent) + 1
    print(f"faults checked in {time.monotonic() - started:.1f} s")

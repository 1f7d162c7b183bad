"""The node's outbox under crashes and an outage (issue 18), with real processes.

A case worker's system posts case after case to a node process (a referral, its
acceptance, two risk assessments: each only valid after the one before), each message with
an ``Idempotency-Key``, and retries with the same key until it is answered, as a real client
does after a lost answer. Meanwhile the node and the broker are killed with SIGKILL at
random moments and started again, TRM_CHAOS_KILLS rounds (6; `make chaos`: 200), and then
the broker is kept down for OUTAGE seconds (times TRM_CHAOS_SCALE), longer than its clock window
(so what waits is signed again), while the client goes on and the node is killed once more.

Afterwards:

- every message the client was answered ``queued`` for is receipted exactly once at the
  broker: its ``GET /v1/messages/{id}`` answers, and one ``message.accepted`` ledger entry
  names it;
- the broker holds no message of the run the client was not told of, and the node's outbox
  none either (a retry with the key got the first answer, never a second message);
- each case was accepted in the order the client sent it;
- the node shows each message ``receipted`` in its outbox and ``acknowledged`` in `GET /sent`
  (its status tracker read each one's fate at the broker, through the kills).

The counts are printed: kills, messages, outage seconds, retries and replayed answers.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.e2e.load import (
    FAST_DELIVERY,
    chaos_kills,
    chaos_rng,
    chaos_scale,
    crash_loop,
    kills_summary,
    logs_hint,
    process_named,
)
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.store.database import create_engine
from trm_broker.store.models import LedgerEntry, Message
from trm_broker.web.signed_requests import SignedRequests

KILLS = chaos_kills()
SCALE = chaos_scale()
#: How long the broker stays down at the end: longer than its clock window (BROKER_SKEW).
OUTAGE = 8.0 * SCALE
BROKER_SKEW = 5
AT, NG = "at.focal-point", "ng.naptip"
#: The node's outbox retries soon, so that the run does not wait on its backoff.
NODE_ENV = {
    "TRM_NODE_OUTBOX_RETRY_BASE_SECONDS": "0.2",
    "TRM_NODE_OUTBOX_RETRY_MAX_SECONDS": "1",
    # The node reads each sent message's fate at the broker soon (GET /sent).
    "TRM_NODE_STATUS_POLL_SECONDS": "0.5",
}

#: The normal suite runs it with the broker on SQLite; `make chaos` on PostgreSQL too. The
#: node's own database is SQLite, its default (WAL, synchronous=FULL: a commit survives a kill).
BACKENDS = ["sqlite", "postgresql"] if SCALE > 1 else ["sqlite"]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300 + 15 * KILLS + 3 * OUTAGE)]


@dataclass
class Told:
    """A message the client was answered ``queued`` (or receipted) for."""

    message_id: str
    case_ref: str
    position: int
    sender: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Client:
    """A case worker's system posting to the node, as the administrator (both sides)."""

    node: Node
    run_id: str
    rng: random.Random
    cases: int
    workers: int = 3
    told: list[Told] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    refused: list[str] = field(default_factory=list)
    started_cases: int = 0

    def case_ref(self, index: int) -> str:
        return f"AT-OUTBOX-{self.run_id}-{index:05d}"

    def steps(self, index: int) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(path, sender, recipient, payload) of one case, in the order it must go."""
        now = datetime.now(UTC)
        assessment = {"risk_level": "low", "recommendation": "return", "protective_factors": []}
        return [
            ("referral", AT, NG, {"destination_country": "NG", "is_child": False}),
            ("referral-response", NG, AT, {"accepted": True}),
            *(
                (
                    "risk-assessment",
                    AT,
                    NG,
                    {**assessment, "assessed_at": (now + timedelta(milliseconds=n)).isoformat()},
                )
                for n in range(2)
            ),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.gather(*(self._worker(http, stop) for _ in range(self.workers)))

    async def _worker(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.started_cases < self.cases and not self.refused:
            index = self.started_cases
            self.started_cases += 1
            case_ref = self.case_ref(index)
            for position, (path, sender, recipient, payload) in enumerate(self.steps(index)):
                body = {
                    "sender": sender,
                    "recipient": recipient,
                    "payload": payload,
                    "consent_ref": f"consent-{case_ref}",
                }
                message_id = await self._post(http, f"/cases/{case_ref}/{path}", body)
                if message_id is None:
                    return
                self.told.append(Told(message_id, case_ref, position, sender))
                await asyncio.sleep(self.rng.uniform(0.1, 0.5))

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str | None:
        """POST until answered, always with the same key: the node may be dead, restarting,
        or unable to seal while the broker is down and it has not read the registry."""
        key = str(uuid.uuid4())
        headers = {"authorization": f"Bearer {self.node.api_token}", "idempotency-key": key}
        deadline = time.monotonic() + 240 + 3 * OUTAGE
        while time.monotonic() < deadline:
            try:
                response = await http.post(self.node.url + path, json=body, headers=headers)
            except httpx.HTTPError as exc:
                self.retries[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code in (201, 202):
                self.replayed += response.headers.get("idempotent-replayed") == "true"
                message_id: str = response.json()["message_id"]
                return message_id
            if response.status_code >= 500 or response.status_code == 409:
                self.retries[f"http_{response.status_code}"] += 1  # 409: key still in use
                await asyncio.sleep(0.3)
                continue
            self.refused.append(f"{path}: {response.status_code} {response.text[:300]}")
            return None
        self.refused.append(f"{path}: no answer in time")
        return None


def register(cluster: LocalCluster, node: Node) -> None:
    """The node's two participants, each with its own country."""
    assert cluster.broker is not None
    assert cluster.operator is not None
    for keyset, country in zip(node.keysets, ("AT", "NG"), strict=True):
        response = httpx.post(
            cluster.broker.url + "/v1/participants",
            json={
                "id": keyset.participant,
                "kind": "focal_point",
                "country": country,
                "inbox_url": node.inbox_url,
                "keys": keyset.public(),
                "statements": demo.stated(cluster.operator, keyset),
            },
            auth=SignedRequests(cluster.operator.signing),
            timeout=10,
        )
        response.raise_for_status()


def register_consents(cluster: LocalCluster, node: Node, client: Client) -> None:
    """A consent for every case the client may open, registered by Austria first."""
    assert cluster.broker is not None
    auth = SignedRequests(node.keysets[0].signing)
    with httpx.Client(timeout=10) as http:
        for index in range(client.cases):
            case_ref = client.case_ref(index)
            body = {
                "id": f"consent-{case_ref}",
                "case_ref": case_ref,
                "given_by": "person",
                "purposes": [t.value for t in MessageType],
                "recipients": [NG, AT],
                "data_categories": [c.value for c in DataCategory],
                "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                "form_digest": "sha-256:" + "A" * 43,
            }
            response = http.post(cluster.broker.url + "/v1/consents", json=body, auth=auth)
            assert response.status_code == 201, response.text


async def outbox(node: Node) -> dict[str, dict[str, Any]]:
    """The node's whole outbox, paged, by message id."""
    found: dict[str, dict[str, Any]] = {}
    after = 0
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            response = await http.get(
                node.url + "/outbox",
                params={"after": after, "limit": 500},
                headers={"authorization": f"Bearer {node.api_token}"},
            )
            response.raise_for_status()
            page = response.json()["messages"]
            if not page:
                return found
            found.update({m["message_id"]: m for m in page})
            after = page[-1]["seq"]


async def settled(node: Node, ids: set[str], wait: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + wait
    while True:
        try:
            seen = await outbox(node)
        except httpx.HTTPError:
            seen = {}
        if all(seen.get(i, {}).get("state") == "receipted" for i in ids):
            return seen
        if time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


async def sent(node: Node, ids: set[str], wait: float) -> dict[str, str]:
    """Each message's status as the node shows it (``GET /sent``), once every one of ``ids``
    is acknowledged or ``wait`` seconds have passed: what a case worker sees, read from the
    node alone."""
    deadline = time.monotonic() + wait
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            found: dict[str, str] = {}
            after: int | None = None
            try:
                while True:
                    params: dict[str, Any] = {"limit": 500}
                    if after is not None:
                        params["after"] = after
                    response = await http.get(
                        node.url + "/sent",
                        params=params,
                        headers={"authorization": f"Bearer {node.api_token}"},
                    )
                    response.raise_for_status()
                    page = response.json()["messages"]
                    if not page:
                        break
                    found.update({m["message_id"]: m["status"] for m in page})
                    after = page[-1]["seq"]
            except httpx.HTTPError:
                found = {}
            if all(found.get(i) == "acknowledged" for i in ids) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)


async def at_broker(database_url: str, run_id: str) -> tuple[dict[str, int], Counter[str]]:
    """The run's messages in the broker's database (their ledger ``seq``: the order they
    were accepted in), and each message's ``message.accepted`` entries."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Message.id, Message.ledger_seq).where(
                        Message.case_ref.like(f"AT-OUTBOX-{run_id}-%")
                    )
                )
            ).all()
            bodies = await connection.execute(
                select(LedgerEntry.body).where(LedgerEntry.type == "message.accepted")
            )
            accepted = Counter(str(json.loads(bytes(b))["message_id"]) for (b,) in bodies.all())
    finally:
        await engine.dispose()
    return {row.id: row.ledger_seq or 0 for row in rows}, accepted


async def statuses(broker_url: str, node: Node, told: list[Told]) -> Counter[str]:
    """Each told message's status from GET /v1/messages/{id}, asked by its sender."""
    signers = {k.participant: SignedRequests(k.signing) for k in node.keysets}
    found: Counter[str] = Counter()
    limit = asyncio.Semaphore(8)
    async with httpx.AsyncClient(timeout=30) as http:

        async def one(message: Told) -> None:
            async with limit:
                response = await http.get(
                    f"{broker_url}/v1/messages/{message.message_id}", auth=signers[message.sender]
                )
            found[str(response.json()["status"]) if response.is_success else "missing"] += 1

        await asyncio.gather(*(one(m) for m in told))
    return found


def resigned(cluster: LocalCluster, name: str) -> int:
    """How many messages the node signed again after the broker found them stale."""
    with sqlite3.connect(cluster.workdir / f"{name}.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM node_outbox WHERE earlier_envelopes IS NOT NULL"
        ).fetchone()
    return int(count)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_message_answered_queued_is_receipted_once_through_kills_and_an_outage(
    tmp_path: Path, backend: str, broker_database: str | None
) -> None:
    seed, rng = chaos_rng()
    started = time.monotonic()
    env = {**FAST_DELIVERY, **NODE_ENV}
    with LocalCluster(tmp_path, broker_database, env) as cluster:
        cluster.migrate()
        cluster.init_operator()
        cluster.start_broker(TRM_CLOCK_SKEW_SECONDS=str(BROKER_SKEW))
        node = cluster.start_node("node-both", [AT, NG])
        register(cluster, node)
        # Enough cases for the whole run at the client's pace (it stops when they run out).
        client = Client(node, f"{rng.randrange(16**6):06x}", rng, cases=150 * SCALE)
        register_consents(cluster, node, client)
        stop = asyncio.Event()
        sending = asyncio.create_task(client.run(stop))
        try:
            while len(client.told) < 4 and not sending.done():  # messages flow first
                await asyncio.sleep(0.2)
            kills = await crash_loop(
                cluster, [("node-both",), ("broker",), ("node-both", "broker")], KILLS, rng
            )
            # The outage: the broker down, the client goes on, the node is killed once.
            process_named(cluster, "broker").kill()
            down_at = time.monotonic()
            await asyncio.sleep(OUTAGE / 2)
            process_named(cluster, "node-both").kill()
            await asyncio.to_thread(cluster.restart, process_named(cluster, "node-both"))
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            outage = time.monotonic() - down_at
            await asyncio.to_thread(cluster.restart, process_named(cluster, "broker"))
            await asyncio.sleep(2)  # what was queued during the outage, and new messages
        finally:
            stop.set()
            await sending
        told = {m.message_id: m for m in client.told}
        seen = await settled(node, set(told), wait=120 + 2 * OUTAGE)
        stored, accepted = await at_broker(cluster.database_url, client.run_id)
        answers = await statuses(cluster.broker.url if cluster.broker else "", node, client.told)
        fates = await sent(node, set(told), wait=60)
        not_acknowledged = [i for i in told if fates.get(i) != "acknowledged"]
        twice = [i for i in told if accepted[i] != 1]
        not_receipted = [i for i in told if seen.get(i, {}).get("state") != "receipted"]
        unknown_at_broker = sorted(set(stored) - set(told))
        unknown_at_node = sorted(set(seen) - set(told))
        by_case: dict[str, list[Told]] = defaultdict(list)
        for message in client.told:
            by_case[message.case_ref].append(message)
        out_of_order = [
            case
            for case, messages in by_case.items()
            if all(m.message_id in stored for m in messages)
            and [m.position for m in sorted(messages, key=lambda m: stored[m.message_id])]
            != sorted(m.position for m in messages)
        ]
        again = resigned(cluster, "node-both")
        in_outage = sum(down_at <= m.at <= down_at + outage for m in client.told)
        report = (
            f"[node outbox {backend}, seed {seed}] messages answered queued={len(told)}"
            f" (cases {len(by_case)}), receipted at the node="
            f"{sum(seen.get(i, {}).get('state') == 'receipted' for i in told)},"
            f" at the broker={len(set(stored) & set(told))}"
            f" (GET /v1/messages: {dict(answers)}), acknowledged as the node shows it (GET"
            f" /sent)={len(told) - len(not_acknowledged)}, accepted entries not one={len(twice)},"
            f" unknown at the broker={len(unknown_at_broker)}, unknown at the node="
            f"{len(unknown_at_node)}, out of order={len(out_of_order)}, refused="
            f"{len(client.refused)}\n  {kills_summary(kills)} plus an outage of the broker of"
            f" {outage:.1f} s (node killed once in it; {in_outage} messages queued in it);"
            f" signed again when found stale: {again};"
            f" client retries {dict(client.retries)}, replayed answers {client.replayed};"
            f" {time.monotonic() - started:.1f} s"
        )
        print(f"\n{report}")
        failed = bool(
            client.refused
            or twice
            or not_receipted
            or not_acknowledged
            or unknown_at_broker
            or unknown_at_node
            or out_of_order
        )
        detail = f"{report}\n{client.refused[:5]}\n{logs_hint(cluster, failed)}"
    assert len(kills) == KILLS
    assert told, detail
    assert client.refused == [], detail
    assert not_receipted == [], detail
    assert not_acknowledged == [], detail
    assert set(stored) >= set(told), detail
    assert twice == [], detail
    assert answers["missing"] == 0, detail
    assert (unknown_at_broker, unknown_at_node) == ([], []), detail
    assert out_of_order == [], detail

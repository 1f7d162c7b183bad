"""Load and chaos for the delivery proofs (issue 6): real processes, real HTTP, real signatures.

:class:`LoadGenerator` plays case transfers between two focal points, each served by its own
NRM node process, straight against the broker's API: every envelope composed, sealed and
signed here, every request signed (RFC 9421) by its sender. A case is a referral, the
recipient's acceptance, then risk assessments from the referring focal point: each message
only after the previous one's receipt, many cases at once. A request that fails (broker
killed, restarting, 5xx, timeout) is sent again with the same envelope bytes until a receipt
comes back: the receipts the senders hold are what the broker promised to deliver.

:func:`crash_loop` kills processes with SIGKILL at random moments and starts them again on
the same port. :func:`check_delivery` compares the receipts with what the nodes stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from tests.support import projected
from trm_broker.crypto import jws
from trm_broker.crypto.errors import CryptoError
from trm_broker.crypto.keys import KeySet, load_ed25519_public
from trm_broker.dev import demo
from trm_broker.dev.cluster import LocalCluster, Node, Process
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node.compose import compose_envelope
from trm_broker.store.database import create_engine
from trm_broker.store.models import Delivery, LedgerEntry
from trm_broker.web.signed_requests import SignedRequests

#: Short delivery timings for every broker and worker process of these tests: a lease left
#: by a killed dispatcher (2 * timeout + 5 s) runs out soon, and retries come within a second.
FAST_DELIVERY = {
    "TRM_DELIVERY_TIMEOUT_SECONDS": "2",
    "TRM_DELIVERY_BACKOFF_MAX_SECONDS": "1",
    "TRM_DELIVERY_POLL_SECONDS": "0.5",
}

RETRYABLE_PROBLEM = "urn:trm-broker:problem:conflict"  # "could not be stored; send it again"


def chaos_kills() -> int:
    """How many SIGKILLs a crash test deals: 10, or TRM_CHAOS_KILLS (`make chaos`: 200)."""
    return int(os.environ.get("TRM_CHAOS_KILLS", "10"))


def chaos_scale() -> int:
    """How much longer the outage and scale-out tests run: 1, or TRM_CHAOS_SCALE."""
    return max(1, int(os.environ.get("TRM_CHAOS_SCALE", "1")))


def chaos_rng() -> tuple[int, random.Random]:
    """A seeded generator for the kills and the load: the seed is printed, so a run can be
    replayed (as far as timing allows) with TRM_CHAOS_SEED."""
    seed = chaos_seed()
    return seed, random.Random(seed)  # noqa: S311 - chaos, not cryptography


def chaos_seed() -> int:
    """The random seed of the kills and the load (TRM_CHAOS_SEED replays a run)."""
    seed = os.environ.get("TRM_CHAOS_SEED")
    return int(seed) if seed else random.SystemRandom().randrange(2**32)


@dataclass
class Party:
    """A focal point: its keys (private, to sign and to be sealed to), its node, country."""

    keyset: KeySet
    node: Node
    country: str

    @property
    def id(self) -> str:
        return self.keyset.participant


async def two_countries(cluster: LocalCluster, *also: Callable[[], object]) -> tuple[Party, Party]:
    """Austria's and Nigeria's focal points, each on a node process of its own, registered by
    the operator with the node's inbox URL. The nodes start at once, with ``also`` (other
    process starts, e.g. workers): starting Python processes one by one is slow."""
    nodes = asyncio.gather(
        asyncio.to_thread(cluster.start_node, "node-at", ["at.focal-point"]),
        asyncio.to_thread(cluster.start_node, "node-ng", ["ng.naptip"]),
    )
    others = asyncio.gather(*(asyncio.to_thread(start) for start in also))
    (at, ng), _ = await asyncio.gather(nodes, others)
    await asyncio.to_thread(demo.register, cluster, at, "AT")
    await asyncio.to_thread(demo.register, cluster, ng, "NG")
    return Party(at.keysets[0], at, "AT"), Party(ng.keysets[0], ng, "NG")


@dataclass
class Sent:
    """One message as its sender knows it. ``receipt_at`` (monotonic) is None until the
    broker's receipt came back; ``position`` is its place in its case's receipt order."""

    message_id: str
    case_ref: str
    sender: str
    recipient: str
    type: str
    payload: dict[str, Any]
    position: int
    attempts: int = 0
    receipt_at: float | None = None
    accepted_at: str | None = None
    repeat_answers: int = 0  # 200: the broker had accepted an earlier attempt already


@dataclass
class LoadGenerator:
    """Cases from ``parties[0]`` to ``parties[1]`` and back (every other case), sent to the
    broker(s) at ``broker_urls`` (each request to one of them at random)."""

    broker_urls: Sequence[str]
    parties: tuple[Party, Party]
    rng: random.Random
    concurrency: int = 6
    risk_assessments: int = 3
    request_timeout: float = 10.0
    give_up_after: float = 90.0  # per message: the broker unavailable this long is a failure
    run_id: str = field(default_factory=lambda: f"{random.SystemRandom().randrange(16**6):06x}")
    sent: list[Sent] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed_requests: Counter[str] = field(default_factory=Counter)
    cases: int = 0
    _receipt_key: tuple[str, Ed25519PublicKey] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Start new cases until ``stop`` is set; return when every case begun has ended."""
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(timeout=self.request_timeout, limits=limits) as client:
            # The broker's receipt key, as a sender learns it (GET /v1/broker): every receipt
            # is checked against it before it counts as held.
            info = await self._broker_info(client)
            if info is None:
                return
            self._receipt_key = (
                str(info["signing_key"]["kid"]),
                load_ed25519_public(info["signing_key"]["public"]),
            )
            await asyncio.gather(*(self._worker(client, stop) for _ in range(self.concurrency)))

    async def _broker_info(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        """GET /v1/broker, retried as a real client retries it: the broker may be down (killed,
        restarting: connection refused or reset, a timeout) or answer 5xx for a while."""
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            try:
                response = await client.get(self._broker() + "/v1/broker")
            except httpx.TransportError as exc:
                self.failed_requests[type(exc).__name__] += 1
            else:
                if response.status_code == 200:
                    info: dict[str, Any] = response.json()
                    return info
                if response.status_code < 500:
                    self.refused.append(f"GET /v1/broker: {response.status_code} {response.text}")
                    return None
                self.failed_requests[f"http_{response.status_code}"] += 1
            await asyncio.sleep(0.1 + 0.2 * self.rng.random())
        self.refused.append(f"GET /v1/broker: no answer in {self.give_up_after} s")
        return None

    async def _worker(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set() and not self.refused:
            index = self.cases
            self.cases += 1
            await self._case(client, index)

    async def _case(self, client: httpx.AsyncClient, index: int) -> None:
        a, b = self.parties if index % 2 == 0 else self.parties[::-1]
        case_ref = f"{a.country}-LOAD-{self.run_id}-{index:05d}"
        consent_ref = f"consent-{case_ref}"
        if not await self._consent(client, a, b, case_ref, consent_ref):
            return
        now = datetime.now(UTC)
        # The payloads only: each envelope's header is what a node computes from its payload.
        plan: list[tuple[Party, Party, MessageType, dict[str, Any]]] = [
            (
                a,
                b,
                MessageType.REFERRAL,
                {
                    "destination_country": b.country,
                    "identification_summary": f"Fictional load-test case {index}.",
                    "form_of_exploitation": "forced_labour",
                    "immediate_needs": ["shelter"],
                    "languages": ["en"],
                    "is_child": False,
                },
            ),
            (b, a, MessageType.REFERRAL_RESPONSE, {"accepted": True, "contact_point": "desk"}),
        ]
        for n in range(self.risk_assessments):
            assessed = (now + timedelta(milliseconds=n)).isoformat()
            plan.append(
                (
                    a,
                    b,
                    MessageType.RISK_ASSESSMENT,
                    {
                        "risk_level": "low",
                        "recommendation": "return",
                        "assessed_at": assessed,
                        "protective_factors": [],
                        "notes": f"assessment {n + 1} of case {index}",
                    },
                )
            )
        for position, (sender, recipient, kind, payload) in enumerate(plan):
            if not await self._send(
                client, sender, recipient, kind, payload, case_ref, consent_ref, position
            ):
                return

    async def _consent(
        self, client: httpx.AsyncClient, a: Party, b: Party, case_ref: str, consent_ref: str
    ) -> bool:
        body = {
            "id": consent_ref,
            "case_ref": case_ref,
            "given_by": "person",
            "purposes": [t.value for t in MessageType],
            "recipients": [b.id, a.id],
            "data_categories": [c.value for c in DataCategory],
            "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            "form_digest": "sha-256:" + "A" * 43,
        }
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            try:
                response = await client.post(
                    self._broker() + "/v1/consents",
                    json=body,
                    auth=SignedRequests(a.keyset.signing),
                )
            except httpx.HTTPError as exc:
                self.failed_requests[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 201 or _problem(response) == RETRYABLE_PROBLEM:
                return True  # 409: an earlier attempt registered it
            if response.status_code < 500:
                self.refused.append(
                    f"consent {consent_ref}: {response.status_code} {response.text}"
                )
                return False
            self.failed_requests[f"http_{response.status_code}"] += 1
            await asyncio.sleep(0.2)
        self.refused.append(f"consent {consent_ref}: no answer in {self.give_up_after} s")
        return False

    async def _send(
        self,
        client: httpx.AsyncClient,
        sender: Party,
        recipient: Party,
        kind: MessageType,
        payload: dict[str, Any],
        case_ref: str,
        consent_ref: str,
        position: int,
    ) -> bool:
        now = datetime.now(UTC)
        computed = projected(kind, payload, now)
        assert computed is not None, f"the load test's {kind.value} payload does not conform"
        header, categories = computed
        envelope, signed = compose_envelope(
            signing_key=sender.keyset.signing,
            sender=sender.id,
            recipient=recipient.id,
            recipient_enc_kid=recipient.keyset.encryption.kid,
            recipient_enc_public=recipient.keyset.encryption.public_b64,
            recipient_enc_alg=recipient.keyset.encryption.alg,
            type=kind,
            case_ref=case_ref,
            header=header,
            payload=payload,
            data_categories=categories,
            consent_ref=consent_ref,
            in_reply_to=None,
            now=now,
        )
        content = json.dumps(signed).encode()  # the same bytes on every attempt
        sent = Sent(envelope.id, case_ref, sender.id, recipient.id, kind.value, payload, position)
        self.sent.append(sent)
        auth = SignedRequests(sender.keyset.signing)
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            sent.attempts += 1
            try:
                response = await client.post(
                    self._broker() + "/v1/messages",
                    content=content,
                    headers={"content-type": "application/jose+json"},
                    auth=auth,
                )
            except httpx.HTTPError as exc:
                self.failed_requests[type(exc).__name__] += 1
                await asyncio.sleep(0.1 + 0.2 * self.rng.random())
                continue
            if response.status_code in (200, 202):
                claims = self._verified_receipt(response.json(), signed, sent.message_id)
                if claims is None:
                    self.refused.append(f"{sent.message_id}: a receipt that does not verify")
                    return False
                sent.receipt_at = time.monotonic()
                sent.accepted_at = str(claims["accepted_at"])
                sent.repeat_answers += response.status_code == 200
                return True
            if response.status_code == 429:  # over the rate limit: wait as told
                self.failed_requests["http_429"] += 1
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            if response.status_code < 500 and _problem(response) != RETRYABLE_PROBLEM:
                self.refused.append(
                    f"{kind.value} {sent.message_id} of {case_ref}: "
                    f"{response.status_code} {response.text}"
                )
                return False
            self.failed_requests[f"http_{response.status_code}"] += 1
            await asyncio.sleep(0.1 + 0.2 * self.rng.random())
        return False  # never receipted: counted as sent but not receipted

    def _verified_receipt(
        self, answer: dict[str, Any], envelope: dict[str, str], message_id: str
    ) -> dict[str, Any] | None:
        """The receipt's claims if the broker's key signed it for exactly this envelope."""
        if self._receipt_key is None:
            return None
        kid, public = self._receipt_key
        try:
            receipt = jws.parse(answer["receipt"], jws.TYP_RECEIPT)
            jws.verify(receipt, public)
            claims = receipt.claims()
        except (CryptoError, KeyError, ValueError):
            return None
        same = (receipt.kid, claims.get("message_id"), claims.get("envelope_digest")) == (
            kid,
            message_id,
            jws.digest(envelope),
        )
        return claims if same and answer.get("message_id") == message_id else None

    def _broker(self) -> str:
        return self.rng.choice(self.broker_urls)

    async def receipted_since(
        self, since: float, *, recipient: str | None = None, timeout: float = 120.0
    ) -> None:
        """Wait until a message (to ``recipient``) got its receipt after ``since`` (monotonic):
        so a test knows the load is flowing, instead of guessing how long that takes on a
        busy machine. ``timeout`` is generous; reaching it fails the test, saying so."""
        deadline = time.monotonic() + timeout
        while not any(
            s.receipt_at is not None and s.receipt_at >= since and recipient in (None, s.recipient)
            for s in self.sent
        ):
            if self.refused:
                raise AssertionError(f"the load stopped: {self.refused[:3]}")
            if time.monotonic() > deadline:
                to = f" to {recipient}" if recipient else ""
                raise AssertionError(f"no message{to} receipted in {timeout} s")
            await asyncio.sleep(0.1)

    @property
    def receipted(self) -> list[Sent]:
        return [s for s in self.sent if s.receipt_at is not None]


def _problem(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


# --- Chaos -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """One round: which processes got SIGKILL when (seconds since the chaos began, and the
    wall clock, to find it in the logs), how long until they answered /healthz again."""

    round: int
    names: tuple[str, ...]
    at: float
    wall_clock: float
    down_seconds: float


def process_named(cluster: LocalCluster, name: str) -> Process:
    for process in cluster.processes:
        if process.name == name:
            return process
    raise LookupError(name)


async def crash_loop(
    cluster: LocalCluster,
    choices: Sequence[tuple[str, ...]],
    kills: int,
    rng: random.Random,
    *,
    between: tuple[float, float] = (0.2, 1.2),
    dead_for: tuple[float, float] = (0.0, 0.5),
) -> list[Kill]:
    """``kills`` rounds: wait a random moment, SIGKILL the processes of one of ``choices``
    (process names), leave them dead a little, start them again on their ports."""
    started = time.monotonic()
    done: list[Kill] = []
    for round_ in range(1, kills + 1):
        await asyncio.sleep(rng.uniform(*between))
        names = rng.choice(choices)
        at, wall = time.monotonic(), time.time()
        for name in names:
            await asyncio.to_thread(process_named(cluster, name).kill)
        await asyncio.sleep(rng.uniform(*dead_for))
        await asyncio.gather(
            *(asyncio.to_thread(cluster.restart, process_named(cluster, name)) for name in names)
        )
        done.append(Kill(round_, names, at - started, wall, time.monotonic() - at))
    return done


def kills_summary(kills: Sequence[Kill]) -> str:
    by_target = Counter("+".join(k.names) for k in kills)
    slowest = max((k.down_seconds for k in kills), default=0.0)
    targets = ", ".join(f"{n}x {t}" for t, n in sorted(by_target.items()))
    return f"{len(kills)} SIGKILL rounds ({targets}), longest downtime {slowest:.1f} s"


# --- What arrived ------------------------------------------------------------------------


async def node_messages(client: httpx.AsyncClient, node: Node) -> list[dict[str, Any]]:
    """Everything the node stored, in arrival order (``seq``), paged."""
    found: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params: dict[str, int] = {"limit": 500}
        if after is not None:
            params["after"] = after
        response = await client.get(
            node.url + "/messages",
            params=params,
            headers={"authorization": f"Bearer {node.api_token}"},
        )
        response.raise_for_status()
        page: list[dict[str, Any]] = response.json()["messages"]
        if not page:
            return found
        found.extend(page)
        after = page[-1]["seq"]


@dataclass(frozen=True)
class BrokerView:
    """The broker's database: each delivery's status, and how many ``message.acknowledged``
    ledger entries name each message."""

    statuses: Mapping[str, str]
    attempts: dict[str, int]
    acknowledged_entries: Counter[str]


async def broker_view(database_url: str) -> BrokerView:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Delivery.message_id, Delivery.status, Delivery.attempts)
                )
            ).all()
            statuses = {message_id: status for message_id, status, _ in rows}
            attempts = {message_id: n for message_id, _, n in rows}
            bodies = await connection.execute(
                select(LedgerEntry.body).where(LedgerEntry.type == "message.acknowledged")
            )
            acks = Counter(str(json.loads(bytes(b))["message_id"]) for (b,) in bodies.all())
    finally:
        await engine.dispose()
    return BrokerView(statuses, attempts, acks)


@dataclass
class Report:
    """The counts a reader checks. ``lost``: receipted, never stored by its recipient's node;
    ``duplicated``: stored more than once; ``unexpected``: stored but never receipted;
    ``out_of_order``: (recipient, case) pairs whose arrival order differs from the receipt
    order; ``altered``: stored with another payload, type, case or parties than sent;
    ``not_acknowledged``: deliveries the broker does not show acknowledged; ``ack_entries``:
    messages whose ``message.acknowledged`` ledger entries are not exactly one."""

    label: str
    sent: int
    receipted: int
    delivered: int
    lost: int
    duplicated: int
    unexpected: int
    out_of_order: int
    altered: int
    not_acknowledged: int
    ack_entries_not_one: int
    repeat_answers: int
    retried_deliveries: int
    repushed: int
    cases: int
    failed_requests: dict[str, int]
    seconds: float
    examples: list[str]

    def summary(self) -> str:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed_requests.items())) or "none"
        text = (
            f"[{self.label}] sent={self.sent} receipted={self.receipted} "
            f"delivered={self.delivered} lost={self.lost} duplicated={self.duplicated} "
            f"unexpected={self.unexpected} out_of_order={self.out_of_order} "
            f"altered={self.altered} not_acknowledged={self.not_acknowledged} "
            f"ack_entries_not_one={self.ack_entries_not_one} | cases={self.cases} "
            f"repeat_answers={self.repeat_answers} retried_deliveries={self.retried_deliveries}"
            f" repushed={self.repushed}"
            f" failed_requests: {failed} | "
            f"{self.seconds:.1f} s"
        )
        if self.examples:
            text += "\n  " + "\n  ".join(self.examples[:20])
        return text

    @property
    def clean(self) -> bool:
        return (
            self.sent == self.receipted > 0
            and self.delivered == self.receipted
            and not self.lost
            and not self.duplicated
            and not self.unexpected
            and not self.out_of_order
            and not self.altered
            and not self.not_acknowledged
            and not self.ack_entries_not_one
        )


async def check_delivery(
    label: str,
    load: LoadGenerator,
    nodes: Sequence[Node],
    database_url: str,
    started: float,
    *,
    wait: float = 120.0,
) -> Report:
    """Wait (at most ``wait`` seconds) until every receipted message is stored at its node
    and acknowledged at the broker, then count."""
    deadline = time.monotonic() + wait
    receipted = {s.message_id: s for s in load.receipted}
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            stored: list[dict[str, Any]] = []
            try:
                for node in nodes:
                    stored.extend(
                        {**m, "node": node.process.name} for m in await node_messages(client, node)
                    )
            except httpx.HTTPError:
                stored = []
            view = await broker_view(database_url)
            ids = {m["message_id"] for m in stored}
            settled = all(view.statuses.get(i) == "acknowledged" for i in receipted)
            if (ids >= receipted.keys() and settled) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    pushes = pushes_received(nodes)
    return count_delivery(label, load, stored, view, pushes, time.monotonic() - started)


def pushes_received(nodes: Sequence[Node]) -> Counter[str]:
    """How many pushes of each message the nodes answered with an acknowledgement, from
    their logs: more than one is a delivery repeated (a dispatcher killed before it recorded
    the answer, a timeout) that the node recognised and did not store again."""
    pushes: Counter[str] = Counter()
    for node in nodes:
        for line in node.process.log_text().splitlines():
            if '"message_received"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "message_received" and event.get("message_id"):
                pushes[str(event["message_id"])] += 1
    return pushes


def count_delivery(
    label: str,
    load: LoadGenerator,
    stored: list[dict[str, Any]],
    view: BrokerView,
    pushes: Counter[str],
    took: float,
) -> Report:
    """Compare the senders' receipts with what the nodes stored (``stored``: their GET
    /messages items, each with the ``node`` it came from) and what the broker shows."""
    receipted = {s.message_id: s for s in load.receipted}
    examples: list[str] = []
    times = Counter(m["message_id"] for m in stored)
    duplicated = [i for i, n in times.items() if n > 1]
    unexpected = [i for i in times if i not in receipted]
    lost = [i for i in receipted if i not in times]
    for i in lost:
        gone = receipted[i]
        examples.append(
            f"lost {gone.type} {i} case {gone.case_ref} -> {gone.recipient} (accepted"
            f" {gone.accepted_at}, broker delivery {view.statuses.get(i)})"
        )
    examples += [f"duplicated {i} stored {times[i]} times" for i in duplicated]
    examples += [f"unexpected {i} at the node, never receipted" for i in unexpected]
    altered = 0
    arrivals: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in sorted(stored, key=lambda m: (m["node"], m["seq"])):
        s = receipted.get(m["message_id"])
        if s is None:
            continue
        arrived = arrivals[(s.recipient, s.case_ref)]
        if s.message_id not in arrived:  # a second copy is counted as duplicated, not here
            arrived.append(s.message_id)
        same = (m["type"], m["case_ref"], m["sender"], m["recipient"], m["payload"]) == (
            s.type,
            s.case_ref,
            s.sender,
            s.recipient,
            s.payload,
        )
        if not same:
            altered += 1
            examples.append(f"altered {s.message_id}: stored {m['type']} {m['case_ref']}")
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for s in sorted(receipted.values(), key=lambda s: (s.case_ref, s.position)):
        expected[(s.recipient, s.case_ref)].append(s.message_id)
    out_of_order = 0
    for key, order in expected.items():
        got = [i for i in arrivals.get(key, []) if i in set(order)]
        # Compare only what arrived: a lost message is counted as lost, not as disorder.
        if got != [i for i in order if i in set(got)]:
            out_of_order += 1
            examples.append(f"out of order: case {key[1]} at {key[0]}: {got} (sent {order})")
    not_acked = [i for i in receipted if view.statuses.get(i) != "acknowledged"]
    examples += [f"not acknowledged at the broker: {i} ({view.statuses.get(i)})" for i in not_acked]
    ack_not_one = [i for i in receipted if view.acknowledged_entries[i] != 1]
    examples += [
        f"{view.acknowledged_entries[i]} message.acknowledged entries for {i}" for i in ack_not_one
    ]
    return Report(
        label=label,
        sent=len(load.sent),
        receipted=len(receipted),
        delivered=len(set(times) & receipted.keys()),
        lost=len(lost),
        duplicated=len(duplicated),
        unexpected=len(unexpected),
        out_of_order=out_of_order,
        altered=altered,
        not_acknowledged=len(not_acked),
        ack_entries_not_one=len(ack_not_one),
        repeat_answers=sum(s.repeat_answers for s in load.sent),
        retried_deliveries=sum(1 for i in receipted if view.attempts.get(i, 0) > 1),
        repushed=sum(1 for i in receipted if pushes[i] > 1),
        cases=load.cases,
        failed_requests=dict(load.failed_requests),
        seconds=took,
        examples=load.refused + examples,
    )


def logs_hint(cluster: LocalCluster, failed: bool) -> str:
    """Where the processes' logs are. When the run failed they are copied out of pytest's
    temporary folders (which later runs delete) into a folder of their own."""
    logs = [p.log_path for p in cluster.processes]
    if failed:
        kept = Path(tempfile.mkdtemp(prefix="trm-chaos-logs-"))
        for log in logs:
            shutil.copy2(log, kept / log.name)
        return f"logs kept in {kept}: {', '.join(log.name for log in logs)}"
    return f"logs: {', '.join(str(log) for log in logs)}"


# --- Reading the broker as its users do ---------------------------------------------------


async def ledger_acknowledgements(
    broker_url: str,
    auditor_key: Path,
    expected: set[str],
    wait: float = 60.0,
    event: str = "message.acknowledged",
) -> Counter[str]:
    """How many ``event`` entries (``message.acknowledged``) of the ledger name each message,
    read from GET /v1/ledger/entries with an auditor's signed requests, once the sequencer
    has integrated one for every message of ``expected`` (or ``wait`` has passed)."""
    auth = SignedRequests(KeySet.read(auditor_key).signing)
    deadline = time.monotonic() + wait
    async with httpx.AsyncClient(timeout=30, auth=auth) as client:
        while True:
            found: Counter[str] = Counter()
            start: int | None = 0
            while start is not None:
                response = await client.get(
                    broker_url + "/v1/ledger/entries", params={"start": start, "limit": 1000}
                )
                response.raise_for_status()
                page = response.json()
                for item in page["entries"]:
                    if item["entry"]["type"] == event:
                        found[str(item["entry"]["message_id"])] += 1
                start = page["next_start"]
            if expected <= found.keys() or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)


async def api_statuses(
    broker_urls: Sequence[str], load: LoadGenerator, parties: Sequence[Party]
) -> dict[str, str]:
    """Each receipted message's status from GET /v1/messages/{id}, asked by its sender (each
    request to the brokers in turn)."""
    keys = {p.id: SignedRequests(p.keyset.signing) for p in parties}
    limit = asyncio.Semaphore(8)
    statuses: dict[str, str] = {}

    async def one(client: httpx.AsyncClient, index: int, sent: Sent) -> None:
        url = f"{broker_urls[index % len(broker_urls)]}/v1/messages/{sent.message_id}"
        async with limit:
            response = await client.get(url, auth=keys[sent.sender])
        statuses[sent.message_id] = (
            str(response.json()["status"])
            if response.status_code == 200
            else f"http_{response.status_code}"
        )

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one(client, i, s) for i, s in enumerate(load.receipted)))
    return statuses

"""The auditor's verifier against a real broker process, and tampering with its database:
each alteration is detected and the first bad index named, even after a re-signing."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support import referral
from trm_broker.cli.ledger_reader import verify
from trm_broker.crypto import broker_keys
from trm_broker.crypto.keys import KeySet
from trm_broker.dev.cluster import LocalCluster
from trm_broker.dev.launch import Completed
from trm_broker.domain.ledger_events import EventType
from trm_broker.ledger import merkle
from trm_broker.ledger.audit import AuditFailure
from trm_broker.ledger.note import Checkpoint, NoteSigner, sign_checkpoint
from trm_broker.ledger.verifier import LedgerFailure
from trm_broker.store.database import create_engine
from trm_broker.store.models import LedgerCheckpoint, LedgerEntry, LedgerNode
from trm_broker.web.signed_requests import SignedRequests

MESSAGES = 12
ENTRIES = 1 + 3 + 2 * MESSAGES  # bootstrap, three registrations, a consent and a message each


class Ledger:
    """A running broker with a ledger of ENTRIES entries, and tools to tamper with it."""

    def __init__(self, cluster: LocalCluster, auditor_key: Path, vkey: str) -> None:
        self.cluster = cluster
        self.auditor_key = auditor_key
        self.vkey = vkey

    @property
    def url(self) -> str:
        assert self.cluster.broker is not None
        return self.cluster.broker.url

    def verify(self, state: Path | None = None) -> Checkpoint:
        return verify(self.url, self.vkey, self.auditor_key, state)

    def cli(self, state: Path, *more: str) -> Completed:
        """`trm-broker ledger verify`, as an auditor runs it."""
        return self._run(
            "ledger",
            "verify",
            "--url",
            self.url,
            "--broker-key",
            self.vkey,
            "--key",
            str(self.auditor_key),
            "--state",
            str(state),
            *more,
        )

    def check_evidence(self, evidence: Path) -> Completed:
        """`trm-broker ledger check-evidence`, as a third party runs it."""
        return self._run("ledger", "check-evidence", str(evidence), "--broker-key", self.vkey)

    def _run(self, *args: str) -> Completed:
        return self.cluster.launcher.run(args, dict(os.environ), self.cluster.workdir)

    def failure(self, state: Path | None = None) -> LedgerFailure:
        with pytest.raises(LedgerFailure) as excinfo:
            self.verify(state)
        return excinfo.value

    def sql(self, change: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        async def run() -> None:
            engine = create_engine(self.cluster.database_url)
            try:
                async with engine.begin() as connection:
                    await change(connection)
            finally:
                await engine.dispose()

        asyncio.run(run())


def _snapshot(ledger: Ledger) -> dict[str, list[dict[str, Any]]]:
    saved: dict[str, list[dict[str, Any]]] = {}

    async def read(connection: AsyncConnection) -> None:
        for table in (LedgerEntry, LedgerNode, LedgerCheckpoint):
            rows = await connection.execute(select(table.__table__))
            saved[table.__tablename__] = [dict(row._mapping) for row in rows]

    ledger.sql(read)
    return saved


def _restore(ledger: Ledger, saved: dict[str, list[dict[str, Any]]]) -> None:
    async def write(connection: AsyncConnection) -> None:
        for table in (LedgerEntry, LedgerNode, LedgerCheckpoint):
            await connection.execute(delete(table))
            await connection.execute(insert(table), saved[table.__tablename__])

    ledger.sql(write)


@pytest.fixture
def ledger(tmp_path: Path, broker_database: str | None) -> Iterator[Ledger]:
    with LocalCluster(tmp_path, broker_database_url=broker_database) as cluster:
        cluster.migrate()
        cluster.init_operator()
        broker = cluster.start_broker()
        assert cluster.operator is not None
        at, ng = KeySet.generate("at.focal-point"), KeySet.generate("ng.naptip")
        auditor = KeySet.generate("at.rapporteur")
        operator = SignedRequests(cluster.operator.signing)
        for keyset, country, kind in [
            (at, "AT", "focal_point"),
            (ng, "NG", "focal_point"),
            (auditor, "AT", "auditor"),
        ]:
            body = {
                "id": keyset.participant,
                "kind": kind,
                "country": country,
                "keys": keyset.public(),
            }
            response = httpx.post(broker.url + "/v1/participants", json=body, auth=operator)
            assert response.status_code == 201, response.text
        for number in range(MESSAGES):
            case_ref = f"AT-2026-{number:04d}"
            consent = {
                "id": f"consent-{case_ref}",
                "case_ref": case_ref,
                "given_by": "person",
                "purposes": ["referral"],
                "recipients": [ng.participant],
                "data_categories": ["identity"],
                "valid_from": "2026-01-01T00:00:00Z",
                "form_digest": "sha-256:" + "C" * 43,
            }
            response = httpx.post(
                broker.url + "/v1/consents", json=consent, auth=SignedRequests(at.signing)
            )
            assert response.status_code == 201, response.text
            response = httpx.post(
                broker.url + "/v1/messages",
                content=json.dumps(referral(at, ng, case_ref=case_ref)).encode(),
                headers={"content-type": "application/jose+json"},
                auth=SignedRequests(at.signing),
            )
            assert response.status_code == 202, response.text
        auditor.write(tmp_path / "auditor.keys.json")
        vkey = httpx.get(broker.url + "/v1/broker").json()["ledger"]["verifier_key"]
        result = Ledger(cluster, tmp_path / "auditor.keys.json", vkey)
        for _ in range(100):
            if result.verify().size == ENTRIES:
                break
        yield result


def test_the_ledger_verifies_and_every_tampering_is_located(ledger: Ledger, tmp_path: Path) -> None:
    state = tmp_path / "auditor-state.json"
    checkpoint = ledger.verify(state)
    assert checkpoint.size == ENTRIES
    assert state.with_name(state.name + ".leaves").stat().st_size == 32 * ENTRIES
    pristine = _snapshot(ledger)

    def tamper(change: Callable[[AsyncConnection], Awaitable[None]]) -> LedgerFailure:
        ledger.sql(change)
        try:
            return ledger.failure()
        finally:
            _restore(ledger, pristine)

    async def alter(c: AsyncConnection) -> None:
        body = (await c.execute(select(LedgerEntry.body).where(LedgerEntry.idx == 5))).scalar_one()
        forged = body.replace(b'"message.accepted"', b'"message.acknowledged"')
        await c.execute(update(LedgerEntry).where(LedgerEntry.idx == 5).values(body=forged))

    async def remove(c: AsyncConnection) -> None:
        await c.execute(delete(LedgerEntry).where(LedgerEntry.idx == 7))

    async def insert_one(c: AsyncConnection) -> None:
        rows = (
            await c.execute(
                select(LedgerEntry.seq, LedgerEntry.idx)
                .where(LedgerEntry.idx >= 4)
                .order_by(LedgerEntry.idx.desc())
            )
        ).all()
        for seq, idx in rows:
            await c.execute(
                update(LedgerEntry).where(LedgerEntry.seq == seq).values(idx=(idx or 0) + 1)
            )
        forged = b'{"at":"2026-11-23T10:00:00.000Z","countries":[],"parties":[],"type":"x","v":1}'
        await c.execute(
            insert(LedgerEntry).values(
                idx=4,
                body=forged,
                type=EventType.MESSAGE_ACCEPTED,  # the column takes only event types
                at=datetime.now(UTC),
                leaf_hash=merkle.leaf_hash(forged),
            )
        )

    async def swap(c: AsyncConnection) -> None:
        bodies = dict(
            (
                await c.execute(
                    select(LedgerEntry.idx, LedgerEntry.body).where(LedgerEntry.idx.in_([3, 9]))
                )
            ).all()
        )
        for idx, other in ((3, 9), (9, 3)):
            await c.execute(
                update(LedgerEntry).where(LedgerEntry.idx == idx).values(body=bodies[other])
            )

    async def truncate(c: AsyncConnection) -> None:
        await c.execute(delete(LedgerEntry).where(LedgerEntry.idx >= 12))

    assert tamper(alter).index == 5
    assert tamper(remove).index == 7
    assert tamper(insert_one).index == 4
    assert tamper(swap).index == 3
    assert tamper(truncate).index == 12

    # Rewrite history consistently and re-sign it with the broker's own key: alone it
    # verifies (nothing to compare with), but the auditor's earlier run names the entry.
    key = broker_keys.read(ledger.cluster.workdir / "broker-key.json").signing

    async def rewrite_and_resign(c: AsyncConnection) -> None:
        await alter(c)
        bodies = (await c.execute(select(LedgerEntry.body).order_by(LedgerEntry.idx))).scalars()
        tree = merkle.CompactRange()
        nodes = [node for body in bodies for node in tree.append(merkle.leaf_hash(body))]
        await c.execute(delete(LedgerNode))
        await c.execute(
            insert(LedgerNode),
            [{"level": level, "idx": idx, "hash": digest} for (level, idx), digest in nodes],
        )
        origin = checkpoint.origin
        note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), NoteSigner(origin, key))
        await c.execute(
            update(LedgerCheckpoint)
            .where(LedgerCheckpoint.size == tree.size)
            .values(root=tree.root(), note=note)
        )

    ledger.sql(rewrite_and_resign)
    assert ledger.verify().size == ENTRIES  # without history, the forgery is consistent
    failure = ledger.failure(state)
    assert failure.index == 5
    assert "verified earlier" in str(failure)
    # The two signed checkpoints of the same size disagree: that is evidence of a fork.
    assert isinstance(failure, AuditFailure)
    assert failure.evidence is not None

    # And the command line says so, with a non-zero exit, and writes the evidence, which a
    # third party checks with the broker's public key alone (no access to the broker).
    evidence = tmp_path / "fork.json"
    result = ledger.cli(state, "--evidence", str(evidence))
    assert result.returncode == 1
    assert "FAILED at index 5" in result.stderr
    assert str(evidence) in result.stderr
    shown = ledger.check_evidence(evidence)
    assert shown.returncode == 0, shown.stderr
    assert "history was rewritten" in shown.stdout
    # Evidence that shows no fork (the latest checkpoint twice) is refused.
    data = json.loads(evidence.read_text())
    data["earlier_checkpoint"] = data["latest_checkpoint"]
    evidence.write_text(json.dumps(data))
    shown = ledger.check_evidence(evidence)
    assert shown.returncode == 1
    assert "shows no fork" in shown.stderr
    _restore(ledger, pristine)
    result = ledger.cli(state)
    assert result.returncode == 0, result.stderr
    assert f"{ENTRIES} entries" in result.stdout

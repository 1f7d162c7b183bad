"""Upgrades (issue 7): the previous release's schema with its data, then this release's
migrations, on SQLite and PostgreSQL; and a static check that keeps every migration
additive (safe while replicas of the previous release still serve) unless it says it is a
contract step.

The previous release's rows are written with SQL of its own shape (revision
``PREVIOUS_RELEASE``), not with this release's models, which know columns it did not have.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support import broker_settings, referral
from trm_broker.api.app import create_app
from trm_broker.crypto import broker_keys, jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import b64url_decode
from trm_broker.crypto.keys import KeySet
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.ledger import merkle
from trm_broker.ledger.note import Checkpoint, NoteSigner, NoteVerifier, sign_checkpoint
from trm_broker.ledger.note import open_checkpoint as open_note
from trm_broker.settings import Settings
from trm_broker.store import deliveries
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.migrate import MIGRATIONS_DIR, head_revision, upgrade_async
from trm_broker.store.models import Delivery, LedgerEntry, Message, UTCDateTime
from trm_broker.web.signed_requests import SignedRequests

#: The schema of the release before this one: what a production database is at when this
#: release's `trm-broker db upgrade` runs.
PREVIOUS_RELEASE = "0004"

AT = KeySet.generate("at.focal-point")
NG = KeySet.generate("ng.naptip")
NG_INBOX = "https://node-ng.example/inbox"


# --- the previous release's tables, as its migrations left them -------------------------

_T = UTCDateTime()
PARTICIPANTS = sa.table(
    "participants",
    *[sa.column(c) for c in ("id", "kind", "country", "inbox_url")],
    sa.column("created_at", _T),
)
PARTICIPANT_KEYS = sa.table(
    "participant_keys",
    *[sa.column(c) for c in ("kid", "participant_id", "use", "alg", "public_key")],
    sa.column("valid_from", _T),
)
MESSAGES = sa.table(
    "messages",
    *[sa.column(c) for c in ("id", "type", "case_ref", "sender_id", "recipient_id")],
    *[sa.column(c) for c in ("sender_kid", "envelope_digest", "receipt", "ledger_seq")],
    sa.column("consent_ref"),
    sa.column("envelope", sa.LargeBinary()),
    sa.column("created_at", _T),
    sa.column("accepted_at", _T),
)
DELIVERIES = sa.table(
    "deliveries",
    *[sa.column(c) for c in ("message_id", "recipient_id", "status", "attempts", "ack")],
    sa.column("next_attempt_at", _T),
    sa.column("last_attempt_at", _T),
    sa.column("acknowledged_at", _T),
)
LEDGER_ENTRIES = sa.table(
    "ledger_entries",
    *[sa.column(c) for c in ("seq", "idx", "type", "case_ref", "party1", "party2")],
    *[sa.column(c) for c in ("country1", "country2")],
    sa.column("body", sa.LargeBinary()),
    sa.column("leaf_hash", sa.LargeBinary()),
    sa.column("at", _T),
)
LEDGER_NODES = sa.table(
    "ledger_nodes", sa.column("level"), sa.column("idx"), sa.column("hash", sa.LargeBinary())
)
LEDGER_CHECKPOINTS = sa.table(
    "ledger_checkpoints",
    sa.column("size"),
    sa.column("root", sa.LargeBinary()),
    sa.column("note"),
    sa.column("issued_at", _T),
)


@dataclass(frozen=True)
class Stored:
    """One message as the previous release stored it."""

    id: str
    case_ref: str
    envelope: bytes
    accepted_at: datetime


def _stored(case_ref: str, accepted_at: datetime) -> Stored:
    envelope = referral(AT, NG, case_ref=case_ref, now=accepted_at)
    claims = json.loads(b64url_decode(envelope["payload"]))
    return Stored(claims["id"], case_ref, canonical_json(envelope), accepted_at)


def _accepted(message: Stored) -> LedgerEvent:
    return LedgerEvent(
        EventType.MESSAGE_ACCEPTED,
        message.accepted_at,
        (AT.participant, NG.participant),
        ("AT", "NG"),
        message.case_ref,
        {"message_id": message.id, "message_type": "referral"},
    )


@dataclass
class PreviousRelease:
    """What the previous release left in its database: two focal points; an acknowledged
    message; a pending one whose acceptance the sequencer had not yet integrated; the
    ledger (two integrated entries under a signed checkpoint, one queued)."""

    acknowledged: Stored
    pending: Stored
    ledger_bodies: list[bytes]

    @classmethod
    def make(cls) -> PreviousRelease:
        now = datetime.now(UTC).replace(microsecond=0)
        acknowledged = _stored("AT-2026-UPG-0001", now - timedelta(hours=2))
        pending = _stored("AT-2026-UPG-0002", now - timedelta(minutes=5))
        events = [
            _accepted(acknowledged),
            LedgerEvent(
                EventType.MESSAGE_ACKNOWLEDGED,
                acknowledged.accepted_at + timedelta(seconds=3),
                (NG.participant, AT.participant),
                ("NG", "AT"),
                acknowledged.case_ref,
                {"message_id": acknowledged.id},
            ),
            _accepted(pending),
        ]
        return cls(acknowledged, pending, [canonical_json(e.claims()) for e in events])

    async def write(self, connection: AsyncConnection, settings: Settings) -> None:
        created = self.acknowledged.accepted_at - timedelta(days=1)
        for participant, country, inbox in ((AT, "AT", None), (NG, "NG", NG_INBOX)):
            await connection.execute(
                sa.insert(PARTICIPANTS).values(
                    id=participant.participant,
                    kind="focal_point",
                    country=country,
                    inbox_url=inbox,
                    created_at=created,
                )
            )
            public = participant.public()
            for use, key in (("sig", public["signing"]), ("enc", public["encryption"])):
                await connection.execute(
                    sa.insert(PARTICIPANT_KEYS).values(
                        kid=key["kid"],
                        participant_id=participant.participant,
                        use=use,
                        alg=key["alg"],
                        public_key=key["public"],
                        valid_from=created,
                    )
                )
        # The ledger: entries 1 and 2 integrated (indexes 0, 1) under a signed checkpoint
        # of size 2; entry 3 queued (no index yet).
        tree = merkle.CompactRange()
        seqs: list[int] = []
        for number, body in enumerate(self.ledger_bodies):
            claims = json.loads(body)
            integrated = number < 2
            leaf = merkle.leaf_hash(body)
            if integrated:
                for (level, idx), digest in tree.append(leaf):
                    await connection.execute(
                        sa.insert(LEDGER_NODES).values(level=level, idx=idx, hash=digest)
                    )
            inserted = await connection.execute(
                sa.insert(LEDGER_ENTRIES)
                .values(
                    idx=number if integrated else None,
                    body=body,
                    leaf_hash=leaf if integrated else None,
                    type=claims["type"],
                    at=datetime.fromisoformat(claims["at"]),
                    case_ref=claims["case_ref"],
                    party1=claims["parties"][0],
                    party2=claims["parties"][1],
                    country1="AT",
                    country2="NG",
                )
                .returning(LEDGER_ENTRIES.c.seq)
            )
            seqs.append(inserted.scalar_one())
        signer = NoteSigner(
            settings.ledger_origin, broker_keys.load(settings.broker_key_file, create=True).signing
        )
        note = sign_checkpoint(Checkpoint(signer.name, tree.size, tree.root()), signer)
        await connection.execute(
            sa.insert(LEDGER_CHECKPOINTS).values(
                size=tree.size, root=tree.root(), note=note, issued_at=self.pending.accepted_at
            )
        )
        for seq, message in ((seqs[0], self.acknowledged), (seqs[2], self.pending)):
            await connection.execute(
                sa.insert(MESSAGES).values(
                    id=message.id,
                    type="referral",
                    case_ref=message.case_ref,
                    sender_id=AT.participant,
                    recipient_id=NG.participant,
                    sender_kid=AT.signing.kid,
                    created_at=message.accepted_at,
                    accepted_at=message.accepted_at,
                    envelope_digest=jws.digest(json.loads(message.envelope)),
                    envelope=message.envelope,
                    receipt='{"protected":"e30","payload":"e30","signature":"AA"}',
                    ledger_seq=seq,
                    consent_ref=f"consent-{message.case_ref}",
                )
            )
        acked_at = self.acknowledged.accepted_at + timedelta(seconds=3)
        await connection.execute(
            sa.insert(DELIVERIES).values(
                message_id=self.acknowledged.id,
                recipient_id=NG.participant,
                status="acknowledged",
                attempts=1,
                next_attempt_at=self.acknowledged.accepted_at,
                last_attempt_at=acked_at,
                acknowledged_at=acked_at,
                ack='{"protected":"e30","payload":"e30","signature":"AA"}',
            )
        )
        await connection.execute(
            sa.insert(DELIVERIES).values(
                message_id=self.pending.id,
                recipient_id=NG.participant,
                status="pending",
                attempts=0,
                next_attempt_at=self.pending.accepted_at,
                last_attempt_at=None,
                acknowledged_at=None,
                ack=None,
            )
        )


# --- the previous release's database, upgraded --------------------------------------------


@pytest.fixture
def unmigrated_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all, on each backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'previous.db'}"
    url: str = request.getfixturevalue("empty_postgres_database")
    return url


def _consent(case_ref: str) -> dict[str, Any]:
    return {
        "id": f"consent-{case_ref}",
        "case_ref": case_ref,
        "given_by": "person",
        "purposes": ["referral"],
        "recipients": [NG.participant],
        "data_categories": ["identity"],
        "valid_from": "2026-01-01T00:00:00Z",
        "form_digest": "sha-256:" + "C" * 43,
    }


async def test_the_previous_release_and_its_data_upgrade_to_this_one(
    unmigrated_database: str, tmp_path: Path
) -> None:
    url = unmigrated_database
    settings = broker_settings(url, tmp_path)
    previous = PreviousRelease.make()
    await upgrade_async(url, PREVIOUS_RELEASE)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await previous.write(connection, settings)

        await upgrade_async(url)  # this release's `trm-broker db upgrade`

        # The data survives, and the new delivery columns are backfilled from the messages.
        async with session_factory(engine)() as session:
            rows = (await session.scalars(sa.select(Delivery).order_by(Delivery.id))).all()
            assert [(d.message_id, d.status) for d in rows] == [
                (previous.acknowledged.id, "acknowledged"),
                (previous.pending.id, "pending"),
            ]
            for delivery, message in zip(
                rows, (previous.acknowledged, previous.pending), strict=True
            ):
                assert delivery.case_ref == message.case_ref
                assert delivery.queued_at == message.accepted_at
                assert delivery.fetched_at is None
                assert delivery.dead_lettered_at is None
            envelopes = dict((await session.execute(sa.select(Message.id, Message.envelope))).all())
            assert envelopes == {
                previous.acknowledged.id: previous.acknowledged.envelope,
                previous.pending.id: previous.pending.envelope,
            }
            bodies = (
                await session.scalars(sa.select(LedgerEntry.body).order_by(LedgerEntry.seq))
            ).all()
            assert list(bodies) == previous.ledger_bodies

            # The dispatcher's claim finds the delivery the previous release left pending.
            now = datetime.now(UTC)
            claimed = await deliveries.claim_due(session, now, now + timedelta(minutes=1), 10)
            assert [(c.message_id, c.inbox_url, c.envelope) for c in claimed] == [
                (previous.pending.id, NG_INBOX, previous.pending.envelope)
            ]
            await session.rollback()  # leave it due
    finally:
        await engine.dispose()

    # This release serves it: statuses, the ledger continued from the previous checkpoint
    # (the queued entry integrated at start), and a new message accepted beside the old ones.
    app = create_app(settings, run_dispatcher=False)
    as_at = SignedRequests(AT.signing)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker"
        ) as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        for message, state, index in (
            (previous.acknowledged, "acknowledged", 0),
            (previous.pending, "accepted", 2),
        ):
            response = await client.get(f"/v1/messages/{message.id}", auth=as_at)
            assert response.status_code == 200, response.text
            status = response.json()
            assert (status["status"], status["ledger_index"]) == (state, index)
            assert status["delivery"]["attempts"] == (1 if state == "acknowledged" else 0)

        vkey = (await client.get("/v1/broker")).json()["ledger"]["verifier_key"]
        verifier = NoteVerifier.from_vkey(vkey)
        note = (await client.get("/v1/ledger/checkpoint")).text
        checkpoint = open_note(note, verifier, origin=verifier.name)
        leaves = [merkle.leaf_hash(body) for body in previous.ledger_bodies]
        assert (checkpoint.size, checkpoint.root) == (3, merkle.root_of(leaves))

        case_ref = "AT-2026-UPG-0003"
        response = await client.post("/v1/consents", json=_consent(case_ref), auth=as_at)
        assert response.status_code == 201, response.text
        response = await client.post(
            "/v1/messages",
            content=json.dumps(referral(AT, NG, case_ref=case_ref)).encode(),
            headers={"content-type": "application/jose+json"},
            auth=as_at,
        )
        assert response.status_code == 202, response.text
        status = await client.get(f"/v1/messages/{response.json()['message_id']}", auth=as_at)
        assert status.json()["status"] == "accepted"


# --- readiness while an upgrade rolls ------------------------------------------------------


async def _set_revision(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("UPDATE alembic_version SET version_num = :revision"),
                {"revision": revision},
            )
    finally:
        await engine.dispose()


async def test_readiness_fails_behind_and_holds_on_a_newer_releases_schema(
    database_url: str, tmp_path: Path
) -> None:
    """Behind: not ready (503), with what to run. A revision this code does not know was
    written by a newer release's `trm-broker db upgrade`: additive first, so this replica
    keeps serving until the rolling upgrade replaces it."""
    app = create_app(broker_settings(database_url, tmp_path), run_dispatcher=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker"
        ) as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        await _set_revision(database_url, PREVIOUS_RELEASE)
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["type"] == "urn:trm-broker:problem:unavailable"
        assert PREVIOUS_RELEASE in response.json()["detail"]
        assert "trm-broker db upgrade" in response.json()["detail"]
        await _set_revision(database_url, "9999_next_release")
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/v1/participants")).status_code == 200
        await _set_revision(database_url, head_revision())


# --- every migration is additive unless it says it is a contract step ---------------------

MIGRATION_FILES = sorted((MIGRATIONS_DIR / "versions").glob("*.py"))

#: Operations that break replicas of the previous release still running on the schema.
_REMOVING = {"drop_table", "drop_column", "rename_table"}
#: Raw SQL that does the same.
_REMOVING_SQL = ("DROP TABLE", "DROP COLUMN", "RENAME ", "SET NOT NULL", "ALTER COLUMN")


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _breaking(call: ast.Call) -> str | None:
    """Why this call in ``upgrade()`` would break the previous release's replicas, if it does."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if name in _REMOVING:
        return name
    if name == "alter_column":
        if _is_false(_keyword(call, "nullable")):
            return "alter_column(nullable=False)"
        for changed in ("new_column_name", "type_"):
            if _keyword(call, changed) is not None:
                return f"alter_column({changed}=...)"
    if name == "add_column":
        # A NOT NULL column without a server default: the old code's inserts fail.
        for column in (a for a in call.args if isinstance(a, ast.Call)):
            no_default = _keyword(column, "server_default") is None
            if _is_false(_keyword(column, "nullable")) and no_default:
                return "add_column(NOT NULL without server_default)"
    if name == "execute":
        sql = " ".join(
            a.value.upper()
            for a in ast.walk(call)
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
        )
        for statement in _REMOVING_SQL:
            if statement in sql:
                return f"execute({statement.strip()} ...)"
    return None


def _function(module: ast.Module, name: str) -> ast.FunctionDef | None:
    return next((f for f in module.body if isinstance(f, ast.FunctionDef) and f.name == name), None)


def migration_problems(source: str) -> list[str]:
    """What keeps a migration from being safe while old replicas serve: each breaking call
    in ``upgrade()`` (unless the docstring declares a "contract step"), a missing
    ``upgrade()`` or ``downgrade()``."""
    module = ast.parse(source)
    problems = [f"no {name}()" for name in ("upgrade", "downgrade") if not _function(module, name)]
    upgrade = _function(module, "upgrade")
    if "contract step" in (ast.get_docstring(module) or "").lower() or upgrade is None:
        return problems
    calls = (node for node in ast.walk(upgrade) if isinstance(node, ast.Call))
    return problems + [f"line {c.lineno}: {why}" for c in calls if (why := _breaking(c))]


@pytest.mark.parametrize("path", MIGRATION_FILES, ids=lambda path: path.name)
def test_every_migration_is_additive_or_a_declared_contract_step(path: Path) -> None:
    assert migration_problems(path.read_text(encoding="utf-8")) == [], (
        f"{path.name}: replicas of the previous release may still serve while it runs; "
        "expand now and contract in a later release, in a migration whose docstring says "
        '"contract step" (docs/operations.md, "Upgrades")'
    )


def test_the_migrations_form_one_line_from_the_previous_release() -> None:
    from alembic.script import ScriptDirectory

    from trm_broker.store.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [head_revision()]
    revisions = [r.revision for r in script.walk_revisions()]
    assert PREVIOUS_RELEASE in revisions
    assert len(revisions) == len(MIGRATION_FILES)


_ADDITIVE = """\"""add a column\"""
def upgrade():
    with op.batch_alter_table("t") as batch:
        batch.add_column(sa.Column("c", sa.String(8), nullable=True))
        batch.add_column(sa.Column("d", sa.Integer(), nullable=False, server_default="0"))
        batch.alter_column("e", existing_type=sa.LargeBinary(), nullable=True)
    op.create_table("u", sa.Column("id", sa.Integer(), nullable=False))
    op.execute("UPDATE t SET c = 'x'")
def downgrade():
    op.drop_table("u")
"""


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ('op.drop_table("t")', "drop_table"),
        ('op.drop_column("t", "c")', "drop_column"),
        ('batch.drop_column("c")', "drop_column"),
        ('op.rename_table("t", "v")', "rename_table"),
        ('op.alter_column("t", "c", nullable=False)', "alter_column(nullable=False)"),
        ('op.alter_column("t", "c", new_column_name="d")', "alter_column(new_column_name=...)"),
        ('op.alter_column("t", "c", type_=sa.Text())', "alter_column(type_=...)"),
        (
            'op.add_column("t", sa.Column("f", sa.Integer(), nullable=False))',
            "add_column(NOT NULL without server_default)",
        ),
        ('op.execute("ALTER TABLE t DROP COLUMN c")', "execute(DROP COLUMN ...)"),
        ('op.execute("ALTER TABLE t ALTER COLUMN c SET NOT NULL")', "execute(SET NOT NULL ...)"),
    ],
)
def test_the_additive_check_finds_what_breaks_old_replicas(change: str, problem: str) -> None:
    assert migration_problems(_ADDITIVE) == []
    breaking = _ADDITIVE.replace("def downgrade", f"    {change}\ndef downgrade")
    assert [p.split(": ", 1)[1] for p in migration_problems(breaking)] == [problem]
    contract = breaking.replace("add a column", "contract step: drop what 0005 replaced")
    assert migration_problems(contract) == []
    assert migration_problems(_ADDITIVE.split("def downgrade")[0]) == ["no downgrade()"]

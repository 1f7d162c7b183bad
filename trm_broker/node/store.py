"""The node's own database: what its participants received (decrypted), what they refused,
and what they sent.

This is the country's case system, not the broker: decrypted payloads belong here.
The schema is made by the node's Alembic revisions (``trm_broker/node/migrations``,
``trm_broker/node/migrate.py``); a test checks that they and these models agree.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, MetaData, String, Text, bindparam, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trm_broker.crypto.canonical import canonical_json
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.messages import MessageType
from trm_broker.store.models import NAMING, UTCDateTime, stored_enum


class NodeBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ReceivedMessage(NodeBase):
    """``seq`` is the arrival order: the cursor case workers page by. Message ids follow the
    sender's clock, so a message delivered late may sort before ones already read."""

    __tablename__ = "node_received"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[MessageType] = mapped_column(stored_enum(MessageType, "type", 32))
    case_ref: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    envelope_digest: Mapped[str] = mapped_column(String(80))
    consent_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    header: Mapped[str] = mapped_column(Text)
    #: The decrypted payload (canonical JSON); NULL once deleted after a restriction.
    payload: Mapped[str | None] = mapped_column(Text)
    ack: Mapped[str] = mapped_column(Text)
    #: Set when the consent it came under was withdrawn: from then on the payload is kept
    #: unread, and deleted once the node's retention (TRM_NODE_WITHDRAWN_RETENTION_SECONDS)
    #: has passed (``purged_at``).
    restricted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    restriction: Mapped[str | None] = mapped_column(String(32))
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WithdrawnConsent(NodeBase):
    """A consent the node learned was withdrawn (a ``consent_withdrawal`` message, or a
    ``consent_withdrawn`` alert and the case at the broker): what arrives under it later is
    restricted on arrival."""

    __tablename__ = "node_withdrawn_consents"

    consent_ref: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(64))
    learned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    learned_from: Mapped[str] = mapped_column(String(16))


class HandledAlert(NodeBase):
    """A ``consent_withdrawn`` alert the node has acted on, so that it reads the case once per
    alert, not at every poll nor after every restart (such alerts stay open as notices)."""

    __tablename__ = "node_alerts_handled"

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RejectedMessage(NodeBase):
    """A message whose payload did not fit its schema: only the signed rejection it got, so a
    repeated delivery gets the same answer (its reasons are locations, never content)."""

    __tablename__ = "node_rejected"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    envelope_digest: Mapped[str] = mapped_column(String(80))
    ack: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class Answered:
    """The answer a message already got here: its envelope's digest and the signed ack."""

    envelope_digest: str
    ack: str
    rejected: bool


class SentMessage(NodeBase):
    __tablename__ = "node_sent"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[MessageType] = mapped_column(stored_enum(MessageType, "type", 32))
    case_ref: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    envelope_digest: Mapped[str] = mapped_column(String(80))
    receipt: Mapped[str] = mapped_column(Text)


class NodeNonce(NodeBase):
    """Nonces of the broker's signed pushes, kept for the signature window (replay)."""

    __tablename__ = "node_request_nonces"

    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OutboxState(StrEnum):
    """Where a message the node sends stands: waiting at the node to be sent, or settled by
    the broker's receipt or its final refusal."""

    QUEUED = "queued"
    RECEIPTED = "receipted"
    REFUSED = "refused"


class OutboxMessage(NodeBase):
    """A message stored, signed, before the broker is called (docs/node.md, "The outbox").

    ``seq`` is the order of queueing: a message is submitted only once every earlier queued
    message of its case is receipted or refused. ``envelope`` is the signed envelope as it is
    submitted, byte for byte, again and again until it is settled. Once receipted, the
    message is also in ``node_sent`` with its receipt, as every sent message is.
    """

    __tablename__ = "node_outbox"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[MessageType] = mapped_column(stored_enum(MessageType, "type", 32))
    case_ref: Mapped[str] = mapped_column(String(64), index=True)
    sender: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(64))
    state: Mapped[OutboxState] = mapped_column(stored_enum(OutboxState, "state", 16), index=True)
    #: The JWS (flattened JSON) as submitted.
    envelope: Mapped[str] = mapped_column(Text)
    #: Versions replaced because the broker found them stale after an outage (a JSON array,
    #: newest last): the same message, the same id, signed again with a new ``created_at``.
    earlier_envelopes: Mapped[str | None] = mapped_column(Text)
    #: Submitted only once this message is receipted, and refused if it is refused (the
    #: return plan to the receiving organisation waits for the plan to the focal point).
    after_id: Mapped[str | None] = mapped_column(String(36))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Why the last attempt failed, as a code (``broker_unreachable``, ``http_503``): never text.
    last_error: Mapped[str | None] = mapped_column(String(64))
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: A refused message's problem (JSON), as the node answers it: the broker's status, rule,
    #: gaps, errors and what to fix.
    refusal: Mapped[str | None] = mapped_column(Text)


class IdempotentAnswer(NodeBase):
    """The first answer to a request sent with an ``Idempotency-Key``, per caller and route,
    with the fingerprint of the request it answered. ``status`` NULL: still being answered."""

    __tablename__ = "node_idempotency"

    #: SHA-256 of who called: the user (or the administrator) and their organisation.
    caller: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The route (``POST /cases/{case_ref}/referral``), not the path it was called on.
    route: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of the method, path, query and JSON body of the first request.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class SentState(StrEnum):
    """A sent message's status as the broker knows it (`GET /v1/messages/{id}`)."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"


class SentStatus(NodeBase):
    """What the broker last said of a message this node sent (one row per ``node_sent``
    row), kept current by the status tracker (node/tracker.py): read again at
    ``next_check_at`` until acknowledged, rejected or dropped."""

    __tablename__ = "node_sent_status"

    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[SentState] = mapped_column(stored_enum(SentState, "status", 16), index=True)
    #: The broker's times: accepted (the receipt's), fetched from the pull inbox, answered
    #: (acknowledged or rejected), dead-lettered; and when the sealed payload left it.
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dead_lettered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    payload_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ledger_index: Mapped[int | None] = mapped_column(Integer)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The broker's code for its last failed push (``http_503``): never text.
    delivery_error: Mapped[str | None] = mapped_column(String(64))
    #: A rejected message's ``{"code", "reasons"}`` (JSON) when the broker gives them: the
    #: recipient's reasons are locations in the payload, never content.
    rejection: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: Reads since the last change (the next read waits longer), and failed reads in a row.
    unchanged_checks: Mapped[int] = mapped_column(Integer, default=0)
    failed_checks: Mapped[int] = mapped_column(Integer, default=0)
    #: Why the last read failed, as a code (``broker_unreachable``, ``http_404``).
    check_error: Mapped[str | None] = mapped_column(String(64))


class SentStatusChange(NodeBase):
    """Each status a sent message took, in the order the node learned them: ``at`` is the
    broker's time for it (when it says one), ``seen_at`` when the node learned it."""

    __tablename__ = "node_sent_status_changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[SentState] = mapped_column(stored_enum(SentState, "status", 16))
    at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


def received_row(
    envelope: Envelope, *, digest: str, payload: str, ack: str, now: datetime
) -> ReceivedMessage:
    """What the node keeps of a message it opened and acknowledged: the envelope's own
    members, its clear header, the decrypted ``payload`` (canonical JSON) and the ack."""
    return ReceivedMessage(
        id=envelope.id,
        type=envelope.type,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
        created_at=envelope.created_at,
        received_at=now,
        envelope_digest=digest,
        consent_ref=envelope.consent_ref,
        header=canonical_json(envelope.header).decode(),
        payload=payload,
        ack=ack,
    )


def sent_row(envelope: Envelope, *, digest: str, receipt: str, now: datetime) -> SentMessage:
    """What the node keeps of a message it sent: the envelope's members and the receipt."""
    return SentMessage(
        id=envelope.id,
        type=envelope.type,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
        sent_at=now,
        envelope_digest=digest,
        receipt=receipt,
    )


#: What a message got here before, stored or rejected (stored first): one query, no ORM.
_ANSWERED = union_all(
    select(
        ReceivedMessage.envelope_digest,
        ReceivedMessage.ack,
        literal(False).label("rejected"),
    ).where(ReceivedMessage.id == bindparam("id")),
    select(
        RejectedMessage.envelope_digest,
        RejectedMessage.ack,
        literal(True).label("rejected"),
    ).where(RejectedMessage.id == bindparam("id")),
).order_by("rejected")


async def answered(session: AsyncSession, message_id: str) -> Answered | None:
    """What the node answered ``message_id`` before, stored or rejected; ``None``: new."""
    row = (await session.execute(_ANSWERED, {"id": message_id})).first()
    if row is None:
        return None
    return Answered(row.envelope_digest, row.ack, rejected=bool(row.rejected))


async def list_received(
    session: AsyncSession, limit: int, after: int | None, recipients: Collection[str]
) -> Sequence[ReceivedMessage]:
    """Received messages addressed to ``recipients`` (the caller's organisations) only."""
    query = (
        select(ReceivedMessage)
        .where(ReceivedMessage.recipient.in_(recipients))
        .order_by(ReceivedMessage.seq)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ReceivedMessage.seq > after)
    return (await session.scalars(query)).all()


async def list_sent(
    session: AsyncSession, limit: int, after: str | None, senders: Collection[str]
) -> Sequence[SentMessage]:
    """Sent messages of ``senders`` (the caller's organisations) only."""
    query = (
        select(SentMessage)
        .where(SentMessage.sender.in_(senders))
        .order_by(SentMessage.id)
        .limit(limit)
    )
    if after:
        query = query.where(SentMessage.id > after)
    return (await session.scalars(query)).all()

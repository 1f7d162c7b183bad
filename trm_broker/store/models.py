"""The broker's tables. Nothing here holds a plaintext payload: ``envelope`` is the signed
envelope as received, whose personal data is HPKE-sealed to the recipient."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trm_broker.domain.alerts import AlertKind
from trm_broker.domain.consent import GivenBy
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import DeliveryStatus, MessageType
from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.domain.workflow import Stage

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError("expected a datetime from the database")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stored_enum(enum: type[StrEnum], name: str, length: int) -> Enum:
    """A column of ``enum``'s values, stored as the same strings as always (``VARCHAR`` of
    ``length``, no native type to migrate when a member is added), read back as members, and
    guarded by a CHECK constraint named ``ck_<table>_<name>``: a value written by hand or by
    an older release that the code does not know is refused by the database itself."""
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """A model's table, for SQLAlchemy Core statements (no ORM unit of work)."""
    return cast(Table, model.__table__)


class Participant(Base):
    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[ParticipantKind] = mapped_column(stored_enum(ParticipantKind, "kind", 20))
    country: Mapped[str] = mapped_column(String(2))
    inbox_url: Mapped[str | None] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ParticipantKey(Base):
    """A public key of a participant; ``use`` is ``sig`` (Ed25519) or ``enc`` (HPKE)."""

    __tablename__ = "participant_keys"
    __table_args__ = (Index("ix_participant_keys_participant_use", "participant_id", "use"),)

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    use: Mapped[KeyUse] = mapped_column(stored_enum(KeyUse, "use", 3))
    alg: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[str] = mapped_column(String(4096))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RegistryVersion(Base):
    """One row whose ``version`` every change of ``participants`` or ``participant_keys``
    increments, by trigger (migration 0010): a broker process's registry cache is valid while
    this number has not moved (store/registry_cache.py)."""

    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_case_ref", "case_ref"),
        # The report's partial days at either end of its period (migration 0009).
        Index("ix_messages_accepted_at", "accepted_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[MessageType] = mapped_column(stored_enum(MessageType, "type", 32))
    case_ref: Mapped[str] = mapped_column(String(64))
    sender_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    recipient_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    sender_kid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    envelope_digest: Mapped[str] = mapped_column(String(80))
    #: The signed envelope with its sealed payload; NULL once purged (retention, withdrawal).
    envelope: Mapped[bytes | None] = mapped_column(LargeBinary)
    receipt: Mapped[str] = mapped_column(Text)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The ``seq`` of the ledger entry recording the acceptance (its index comes later).
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    consent_ref: Mapped[str | None] = mapped_column(String(128), index=True)


class Delivery(Base):
    """One message's way to its recipient: the outbox row the dispatcher works through.

    ``next_attempt_at`` is both the retry schedule and a dispatcher's lease: a claimed row
    is moved past the attempt's end, so it is due again only if its dispatcher died.
    ``queued_at`` starts the maximum age (acceptance, or an operator's re-queue);
    ``case_ref`` orders one case's deliveries to one recipient.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_recipient_case", "recipient_id", "case_ref", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), unique=True)
    recipient_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    case_ref: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(stored_enum(DeliveryStatus, "status", 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dead_lettered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ack: Mapped[str | None] = mapped_column(Text)


class RequestNonce(Base):
    """A signed request's nonce, kept until its signature would be too old to accept anyway."""

    __tablename__ = "request_nonces"
    __table_args__ = (Index("ix_request_nonces_expires_at", "expires_at"),)

    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RegistryChange(Base):
    """One change of the registry, with the operator's signed request as its proof.

    ``method``, ``target_uri``, ``content_digest``, ``signature_input``, ``signature`` and
    ``body`` are exactly what the operator signed (RFC 9421), so anyone holding the
    operator's public key can check the record later. The bootstrap of the first operator
    has no request: its proof members are empty.
    """

    __tablename__ = "registry_changes"
    __table_args__ = (Index("ix_registry_changes_participant_id", "participant_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[EventType] = mapped_column(stored_enum(EventType, "action", 32))
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    kid: Mapped[str | None] = mapped_column(String(64))
    operator_id: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    operator_kid: Mapped[str] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(8))
    target_uri: Mapped[str | None] = mapped_column(String(2048))
    content_digest: Mapped[str | None] = mapped_column(String(200))
    signature_input: Mapped[str | None] = mapped_column(String(1024))
    signature: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


class LedgerEntry(Base):
    """One ledger event. ``seq`` is the order of commit-time appends; ``idx`` (the leaf index)
    is given by the sequencer when it integrates the entry into the tree."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_pending", "idx", "seq"),
        Index("ix_ledger_entries_case_ref", "case_ref"),
        Index("ix_ledger_entries_party1", "party1"),
        Index("ix_ledger_entries_party2", "party2"),
        Index("ix_ledger_entries_type_at", "type", "at"),
        # The console's ledger search by country, a page at a time in index order
        # (migration 0009), or by time alone (migration 0008).
        Index("ix_ledger_entries_country1_idx", "country1", "idx"),
        Index("ix_ledger_entries_country2_idx", "country2", "idx"),
        Index("ix_ledger_entries_at", "at"),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    idx: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    type: Mapped[EventType] = mapped_column(stored_enum(EventType, "type", 40))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    case_ref: Mapped[str | None] = mapped_column(String(64))
    party1: Mapped[str | None] = mapped_column(String(64))
    party2: Mapped[str | None] = mapped_column(String(64))
    party3: Mapped[str | None] = mapped_column(String(64), index=True)
    country1: Mapped[str | None] = mapped_column(String(2))
    country2: Mapped[str | None] = mapped_column(String(2))


class LedgerDay(Base):
    """The first and last index of the ledger's entries of one UTC day (by ``at``), kept by
    database triggers as entries get their index (migration 0009), whoever writes them. A
    search by time reads only the indexes between: ``at`` grows with the index but not
    strictly, so the bounds are the day's true extremes, not a guess from its order."""

    __tablename__ = "ledger_days"

    #: ``YYYY-MM-DD``, as ``store.days.utc_day`` gives it.
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    first_idx: Mapped[int] = mapped_column(BigInteger)
    last_idx: Mapped[int] = mapped_column(BigInteger)


class MessageDay(Base):
    """How many messages of a type one participant sent another on one UTC day (by
    ``accepted_at``): the auditors' report's counts, kept by a database trigger in the
    transaction of each accepted message (migration 0009). Participants, not countries: the
    report reads their countries as they are when it is asked for, as before."""

    __tablename__ = "message_days"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    sender_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    recipient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: One of 16 rows per (day, type, pair) on PostgreSQL (a hash of the message id), so that
    #: concurrent accepts do not wait on one row's lock until they commit; 0 on SQLite, which
    #: has one writer at a time. The figures add the shards up.
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class CaseReferral(Base):
    """A case's first referral (the earliest by acceptance, then id: its time, id, sender
    and recipient) and first reception confirmation, kept by the same trigger (migration
    0009): the report's referral-to-reception times read one row a case referred in its
    period, not every message of it."""

    __tablename__ = "case_referrals"
    __table_args__ = (Index("ix_case_referrals_referred_at", "referred_at"),)

    case_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    referred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    referral_id: Mapped[str | None] = mapped_column(String(36))
    sender_id: Mapped[str | None] = mapped_column(String(64))
    recipient_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LedgerNode(Base):
    """The hash of a complete aligned subtree: leaves [idx * 2**level, (idx + 1) * 2**level)."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerCheckpoint(Base):
    """Every checkpoint the broker has signed (C2SP tlog-checkpoint in a signed note)."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsentRecord(Base):
    """A consent (docs/design.md §7), registered by the sending focal point in a signed request.

    Scope lists are RFC 8785 JSON arrays. ``proof`` is the verified signed request (JSON of
    method, target URI, digest, signature input and signature), as for registry changes.
    """

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_case_ref", "case_ref"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(64))
    registered_by: Mapped[str] = mapped_column(ForeignKey("participants.id"))
    given_by: Mapped[GivenBy] = mapped_column(stored_enum(GivenBy, "given_by", 16))
    purposes: Mapped[str] = mapped_column(Text)
    recipients: Mapped[str] = mapped_column(Text)
    recipient_countries: Mapped[str] = mapped_column(Text)
    data_categories: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    form_digest: Mapped[str] = mapped_column(String(80))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    proof: Mapped[str] = mapped_column(Text)


class CaseTransferRow(Base):
    """The workflow state of one case transfer (``domain.workflow.CaseTransfer`` as JSON).

    ``version`` makes concurrent updates of one case safe: an update names the version it
    read, and loses (409) if another committed first.
    """

    __tablename__ = "case_transfers"

    case_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    sending: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    receiving_org: Mapped[str | None] = mapped_column(String(64))
    stage: Mapped[Stage] = mapped_column(stored_enum(Stage, "stage", 20))
    state: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertRecord(Base):
    """An alert for the parties of a case (reception or monitoring overdue, consent
    withdrawn); open while ``closed_at`` is NULL."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_case_ref_kind", "case_ref", "kind"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    case_ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[AlertKind] = mapped_column(stored_enum(AlertKind, "kind", 32))
    party1: Mapped[str] = mapped_column(String(64))
    party2: Mapped[str | None] = mapped_column(String(64))
    party3: Mapped[str | None] = mapped_column(String(64))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Refusal(Base):
    """A message refused by a consent or workflow rule, for the auditors' report: the rule,
    the message type and the countries, nothing else."""

    __tablename__ = "refusals"
    __table_args__ = (Index("ix_refusals_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    rule: Mapped[str] = mapped_column(String(80))
    message_type: Mapped[MessageType] = mapped_column(stored_enum(MessageType, "message_type", 32))
    sender_country: Mapped[str] = mapped_column(String(2))
    recipient_country: Mapped[str] = mapped_column(String(2))


class ConsoleChallenge(Base):
    """A sign-in challenge of the auditors' console, issued to a registered key; used once.

    Only its SHA-256 is kept: the challenge itself travels in the one-time link."""

    __tablename__ = "console_challenges"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kid: Mapped[str] = mapped_column(ForeignKey("participant_keys.kid"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ConsoleSession(Base):
    """A signed-in auditor's (or operator's) console session. The browser holds the session
    id; only its SHA-256 is kept, as the node's web sessions do."""

    __tablename__ = "console_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The key that signed the sign-in challenge: the session ends when it is revoked.
    kid: Mapped[str] = mapped_column(ForeignKey("participant_keys.kid"), index=True)
    #: The synchronizer token of the session's forms (OWASP CSRF Prevention Cheat Sheet).
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

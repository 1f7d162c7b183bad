"""The ledger entry of every event type, as a model: `contracts/schemas/ledger/` is generated
from these, and tests validate the entries the broker really writes against them.

An entry is :meth:`LedgerEvent.claims` (docs/design.md §9): the common members (``v``, ``type``,
``at``, ``parties``, ``countries``, ``case_ref`` for the events of a case) and the event's own
facts. Every member is an id, a code, a time, a count or a digest: never a payload, a name or
free text. Digests are ``sha-256:`` and the unpadded base64url of the SHA-256 of the bytes
each field's description names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from trm_broker.domain.consent import GivenBy
from trm_broker.domain.envelope import CASE_REF_PATTERN, CONSENT_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN, ParticipantKind
from trm_broker.domain.signed_objects import DIGEST_PATTERN, RejectionCode, absent_when_none

#: The entry's time: UTC, milliseconds, ``Z`` (:func:`ledger_events.rfc3339`).
ENTRY_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{43}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
#: The kinds of alert a case can have (`GET /v1/alerts`, ``domain.alerts.AlertKind``): the
#: workflow's deadlines, a dead letter, a withdrawn consent, a header its payload contradicts.
AlertName = Literal[
    "reception_overdue",
    "monitoring_overdue",
    "delivery_dead_lettered",
    "consent_withdrawn",
    "header_payload_mismatch",
]

ParticipantId = Annotated[str, Field(pattern=PARTICIPANT_ID_PATTERN)]
Country = Annotated[str, Field(pattern=COUNTRY_PATTERN)]
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN)]
KeyId = Annotated[str, Field(pattern=KEY_ID_PATTERN, description="RFC 7638 thumbprint.")]
EntryTime = Annotated[str, Field(pattern=ENTRY_TIME_PATTERN)]
MessageId = Annotated[str, Field(pattern=UUID7_PATTERN)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1]
    at: EntryTime = Field(description="When the event happened: RFC 3339, UTC, milliseconds.")
    parties: list[ParticipantId] = Field(
        min_length=1, description="The participants concerned: who may read the entry."
    )
    countries: list[Country] = Field(
        json_schema_extra={"uniqueItems": True},
        description="Their countries (ISO 3166-1 alpha-2), sorted, each once.",
    )


class _CaseEntry(_Entry):
    case_ref: str = Field(pattern=CASE_REF_PATTERN, description="The pseudonymous case.")


class _RegistryEntry(_Entry):
    participant: ParticipantId = Field(description="The participant changed.")
    kind: ParticipantKind
    change_id: str = Field(
        pattern=UUID7_PATTERN, description="The change in `GET /v1/participants` `changes[]`."
    )
    operator: ParticipantId = Field(description="Who made the change.")
    operator_kid: KeyId = Field(description="The key that signed the operator's request.")


class OperatorBootstrapped(_RegistryEntry):
    """The first operator, written by `trm-broker operator init` (no signed request)."""

    model_config = ConfigDict(title="operator.bootstrapped")
    type: Literal["operator.bootstrapped"]
    kid: KeyId = Field(description="The operator's signing key.")
    proof_digest: None = Field(description="Null: a bootstrap has no signed request.")


class _ProvedChange(_RegistryEntry):
    proof_digest: Digest = Field(
        description="SHA-256 of the RFC 8785 JSON of the change's `proof` object "
        "(`changes[].proof` in `GET /v1/participants`): the operator's signed request."
    )


class ParticipantRegistered(_ProvedChange):
    """An operator registered a participant (its keys follow as `key.added`, or came with it)."""

    model_config = ConfigDict(title="participant.registered")
    type: Literal["participant.registered"]
    kid: None = Field(description="Null: the change concerns the participant, not a key.")


class KeyAdded(_ProvedChange):
    """An operator added a key to a participant."""

    model_config = ConfigDict(title="key.added")
    type: Literal["key.added"]
    kid: KeyId = Field(description="The key added.")


class KeyRevoked(_ProvedChange):
    """An operator revoked a participant's key."""

    model_config = ConfigDict(title="key.revoked")
    type: Literal["key.revoked"]
    kid: KeyId = Field(description="The key revoked.")


class _MessageEntry(_CaseEntry):
    message_id: MessageId
    envelope_digest: Digest = Field(
        description="SHA-256 of the RFC 8785 JSON of the envelope's JWS object "
        "{payload, protected, signature}: the receipt's `envelope_digest`."
    )


class MessageAccepted(_MessageEntry):
    """The broker stored an envelope and signed its receipt; `parties` are its sender then
    its recipient."""

    model_config = ConfigDict(title="message.accepted")
    type: Literal["message.accepted"]
    message_type: MessageType
    sender_kid: KeyId = Field(description="The key that signed the envelope.")
    created_at: EntryTime = Field(description="The envelope's created_at, as an entry time.")
    consent_ref: str | None = Field(
        pattern=CONSENT_REF_PATTERN,
        description="The envelope's; null when it names none (only a consent_withdrawal may).",
    )
    data_categories: list[DataCategory] = Field(
        json_schema_extra={"uniqueItems": True}, description="Sorted."
    )


class _AnsweredEntry(_MessageEntry):
    ack_digest: Digest = Field(
        description="SHA-256 of the RFC 8785 JSON of the recipient's signed answer, the JWS "
        "object {payload, protected, signature} (typ trm-ack+jws) exactly as the broker "
        "verified it: `sha-256:` + base64url without padding. A rejection's reasons stay out "
        "of the ledger; this digest commits to them."
    )
    attempts: int = Field(ge=1, description="Delivery attempts, this answer's included.")


class MessageAcknowledged(_AnsweredEntry):
    """The recipient's node acknowledged the envelope (status `received`)."""

    model_config = ConfigDict(title="message.acknowledged")
    type: Literal["message.acknowledged"]


class MessageRejected(_AnsweredEntry):
    """The recipient's node refused the payload, signed (status `rejected`): final."""

    model_config = ConfigDict(title="message.rejected")
    type: Literal["message.rejected"]
    # Absent, never null, when there is none (SkipJsonSchema: the schema has no null).
    code: RejectionCode | SkipJsonSchema[None] = Field(
        None,
        json_schema_extra=absent_when_none,
        description="The rejection's code, as the recipient signed it: `payload-invalid`, or "
        "`header-payload-mismatch` (a finding: the sender's signed header contradicts its "
        "sealed payload; an alert is raised). Absent when the answer names none.",
    )


class MessageDeadLettered(_MessageEntry):
    """The broker stopped retrying a delivery past its maximum age."""

    model_config = ConfigDict(title="message.dead_lettered")
    type: Literal["message.dead_lettered"]
    attempts: int = Field(ge=0)
    last_error: str = Field(
        pattern=r"^[A-Za-z0-9_]{1,200}$",
        description="The last attempt's error code (e.g. `timeout`, `http_503`, "
        "`ack_bad_signature`), or `waiting_for_earlier_message`.",
    )


class MessageRequeued(_MessageEntry):
    """An operator put a dead letter back in the queue."""

    model_config = ConfigDict(title="message.requeued")
    type: Literal["message.requeued"]
    requeued_by: ParticipantId = Field(description="The operator.")


class PayloadPurged(_MessageEntry):
    """The broker deleted a stored envelope; its digest stays."""

    model_config = ConfigDict(title="payload.purged")
    type: Literal["payload.purged"]
    reason: Literal["retention", "consent_withdrawn"]


class ConsentRegistered(_CaseEntry):
    """A focal point registered a person's consent (`POST /v1/consents`)."""

    model_config = ConfigDict(title="consent.registered")
    type: Literal["consent.registered"]
    consent_id: str = Field(pattern=CONSENT_REF_PATTERN)
    given_by: GivenBy
    purposes: list[MessageType]
    recipients: list[ParticipantId]
    recipient_countries: list[Country]
    data_categories: list[DataCategory]
    form_digest: Digest = Field(description="As registered: the signed form kept at the node.")


class ConsentWithdrawn(_CaseEntry):
    """A consent was withdrawn; `parties` is the focal point that registered it, `countries`
    its country and those of everyone notified (a search by either country finds it)."""

    model_config = ConfigDict(title="consent.withdrawn")
    type: Literal["consent.withdrawn"]
    consent_id: str = Field(pattern=CONSENT_REF_PATTERN)
    deliveries_dropped: int = Field(ge=0, description="Undelivered messages dropped.")
    notified: list[ParticipantId] = Field(
        description="Every party of the case (the receiving organisation included) and everyone "
        "who sent or received data under it, but the focal point that withdrew it, sorted: each "
        "gets a `consent_withdrawn` alert, with its `alert.raised` entry."
    )


class AlertRaised(_CaseEntry):
    """An alert opened on a case (`GET /v1/alerts`)."""

    model_config = ConfigDict(title="alert.raised")
    type: Literal["alert.raised"]
    alert: AlertName


class AlertClosed(_CaseEntry):
    """An alert on a case closed."""

    model_config = ConfigDict(title="alert.closed")
    type: Literal["alert.closed"]
    alert: AlertName


ENTRY_MODELS: dict[EventType, type[_Entry]] = {
    EventType.OPERATOR_BOOTSTRAPPED: OperatorBootstrapped,
    EventType.PARTICIPANT_REGISTERED: ParticipantRegistered,
    EventType.KEY_ADDED: KeyAdded,
    EventType.KEY_REVOKED: KeyRevoked,
    EventType.MESSAGE_ACCEPTED: MessageAccepted,
    EventType.MESSAGE_ACKNOWLEDGED: MessageAcknowledged,
    EventType.MESSAGE_REJECTED: MessageRejected,
    EventType.MESSAGE_DEAD_LETTERED: MessageDeadLettered,
    EventType.MESSAGE_REQUEUED: MessageRequeued,
    EventType.PAYLOAD_PURGED: PayloadPurged,
    EventType.CONSENT_REGISTERED: ConsentRegistered,
    EventType.CONSENT_WITHDRAWN: ConsentWithdrawn,
    EventType.ALERT_RAISED: AlertRaised,
    EventType.ALERT_CLOSED: AlertClosed,
}

AnyEntry = Annotated[
    OperatorBootstrapped
    | ParticipantRegistered
    | KeyAdded
    | KeyRevoked
    | MessageAccepted
    | MessageAcknowledged
    | MessageRejected
    | MessageDeadLettered
    | MessageRequeued
    | PayloadPurged
    | ConsentRegistered
    | ConsentWithdrawn
    | AlertRaised
    | AlertClosed,
    Field(discriminator="type"),
]
#: Any entry, told apart by its ``type``.
ENTRY = TypeAdapter[AnyEntry](AnyEntry)

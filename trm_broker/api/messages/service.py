"""Accepting an envelope: every check of docs/design.md §5, in order, before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.api.consents import service as consents
from trm_broker.api.messages import rules as rules_check
from trm_broker.api.messages.schemas import (
    DeliveryOut,
    DeliveryState,
    MessageState,
    MessageStatusOut,
    ReceiptOut,
    RejectionOut,
    SignedObject,
)
from trm_broker.crypto import envelopes, jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.encoding import sha256_digest
from trm_broker.crypto.errors import VerificationError
from trm_broker.crypto.keys import SigningKey
from trm_broker.crypto.seal import suite_for
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.domain.messages import DeliveryStatus
from trm_broker.domain.participants import MESSAGING_KINDS
from trm_broker.domain.signed_objects import AckClaims, ReceiptClaims
from trm_broker.domain.times import rfc3339
from trm_broker.domain.workflow import Rules
from trm_broker.logs import bind_ids
from trm_broker.store import accept_reads, ledger, registry_cache
from trm_broker.store import deliveries as outbox
from trm_broker.store import messages as store
from trm_broker.store.models import Delivery
from trm_broker.store.registry_cache import Registry, RegistryCache
from trm_broker.web.problems import Conflict, Forbidden, InvalidEnvelope, NotFound
from trm_broker.web.refusals import object_problem


@dataclass
class Submission:
    """What is known so far of the envelope being accepted, for metrics: its type once the
    envelope verified and parsed (``unknown`` before, or when it never does)."""

    message_type: str = "unknown"
    #: Whether the recipient is pushed to (has an inbox URL): only then is the dispatcher
    #: woken; a pull recipient fetches its messages.
    pushed: bool = True


async def accept(
    session: AsyncSession,
    body: bytes,
    broker_key: SigningKey,
    now: datetime,
    clock_skew: timedelta,
    caller_id: str,
    rules: Rules,
    *,
    registry: Registry | None = None,
    before_writes: Callable[[], Awaitable[None]] | None = None,
    seen: Submission | None = None,
) -> tuple[ReceiptOut, bool]:
    """Verify and store one envelope with its outbox row; return the receipt and whether
    it is new (False: the same envelope was accepted before and its receipt is returned).

    ``registry`` is the request's view of the registry (read afresh if not given);
    ``before_writes`` runs in the transaction before anything is written (the request's
    nonce is spent there); ``seen`` learns the envelope's type as soon as it is known."""
    if registry is None:
        registry = await registry_cache.view(session, RegistryCache())
    # 1-6. The envelope verifier (crypto/envelopes.py): structure and protected header,
    #      the signing key from the registry usable now, the signature, canonical payload,
    #      the envelope model, and the signer is the sender.
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:  # incl. JSONDecodeError, huge integers
        raise InvalidEnvelope("The body must be a JWS in flattened JSON serialisation.") from exc
    try:
        verified = await envelopes.verify_envelope(obj, _registry_keys(registry), at=now)
    except VerificationError as exc:
        raise object_problem(exc) from exc
    envelope, kid = verified.envelope, verified.kid
    # Signed and well formed: the rest of this request's log lines name the message.
    bind_ids(message_id=envelope.id)
    if seen is not None:
        seen.message_type = envelope.type.value

    # 7. The request is signed by the sender too, and both parties may exchange case messages.
    if envelope.sender != caller_id:
        raise Forbidden(
            "The request must be signed by the envelope's sender; "
            "a participant sends only its own messages."
        )
    sender = await registry.participant(envelope.sender)
    recipient = await registry.participant(envelope.recipient)
    if sender is None or sender.kind not in MESSAGING_KINDS:
        raise Forbidden(f"Participant {envelope.sender} may not send case messages.")
    if recipient is None:
        raise InvalidEnvelope(f"Recipient {envelope.recipient} is not registered.")
    if recipient.kind not in MESSAGING_KINDS:
        raise InvalidEnvelope(f"Recipient {envelope.recipient} does not receive case messages.")
    if seen is not None:
        seen.pushed = recipient.inbox_url is not None

    # 8. Sealed to one of the recipient's usable encryption keys.
    enc_key = await registry.key(envelope.sealed.kid)
    if (
        enc_key is None
        or enc_key.use != "enc"
        or enc_key.participant_id != envelope.recipient
        or not registry_cache.is_usable(enc_key, now)
    ):
        raise InvalidEnvelope(
            f"The payload must be sealed to a current encryption key of {envelope.recipient}."
        )
    if envelope.sealed.suite != suite_for(enc_key.alg):
        raise InvalidEnvelope(
            f"A payload to key {enc_key.kid} ({enc_key.alg}) is sealed with "
            f"{suite_for(enc_key.alg)}."
        )

    # 9. Idempotency: the same id with the same envelope returns the original receipt. Only
    #    the sender's own messages are looked at before freshness, so nobody else can use
    #    an old envelope to learn whether an id exists.
    digest = verified.digest
    reads = await accept_reads.read(session, envelope.id, envelope.case_ref, envelope.consent_ref)
    existing = reads.message
    if existing is not None and existing.sender_id != envelope.sender:
        existing = None  # treated as new: freshness first, then the id conflicts (409)
    if existing is not None:
        if existing.envelope_digest != digest:
            raise Conflict(
                f"Message id {envelope.id} was already accepted with different content; "
                "use a new id for a new message."
            )
        return _receipt_out(existing), False

    # 10. Freshness, checked after idempotency so a retried old envelope still gets its receipt.
    try:
        envelopes.require_fresh(envelope, now, clock_skew)
    except VerificationError as exc:
        raise object_problem(exc) from exc

    # 11. Consent covers it, and the case's workflow and return safeguards allow it; the
    #    case's new state is written in this transaction (docs/design.md §6, §7).
    #    Nothing is written before this point; the request's nonce is the first write.
    if before_writes is not None:
        await before_writes()
    admitted = await rules_check.admit(
        session, envelope, sender, recipient, now, rules, registry, reads
    )

    # 12. Store the ledger entry, the message and its outbox row in one transaction (one
    #     statement on PostgreSQL); the caller commits, then we answer (docs/design.md §8).
    entry = ledger.entry_row(
        LedgerEvent(
            EventType.MESSAGE_ACCEPTED,
            now,
            parties=(envelope.sender, envelope.recipient),
            countries=(sender.country, recipient.country),
            case_ref=envelope.case_ref,
            facts={
                "message_id": envelope.id,
                "message_type": envelope.type.value,
                "envelope_digest": digest,
                "sender_kid": kid,
                "created_at": rfc3339(envelope.created_at),
                "consent_ref": envelope.consent_ref,
                "data_categories": sorted(c.value for c in envelope.data_categories),
            },
        ),
    )
    entry_body = cast(bytes, entry["body"])
    claims = ReceiptClaims(
        v=1,
        message_id=envelope.id,
        envelope_digest=digest,
        accepted_at=rfc3339(now),
        ledger_index=None,
        ledger_entry=sha256_digest(entry_body),
    )
    receipt = jws.sign(
        claims.model_dump(mode="json"),
        broker_key,
        jws.TYP_RECEIPT,
    )
    message = await store.add_accepted(
        session,
        envelope,
        signed=canonical_json(obj),
        digest=digest,
        sender_kid=kid,
        receipt=json.dumps(receipt),
        entry=entry,
        now=now,
    )
    if admitted.withdraws is not None:  # takes effect at once, for everything but itself
        await consents.withdraw(session, admitted.withdraws, now, keep=envelope.id)
    return _receipt_out(message), True


def _registry_keys(registry: Registry) -> envelopes.KeyLookup:
    """The envelope verifier's key lookup: the broker's own registry."""

    async def lookup(kid: str) -> envelopes.KeyRecord | None:
        key = await registry.key(kid)
        if key is None:
            return None
        return envelopes.KeyRecord(
            kid=key.kid,
            participant=key.participant_id,
            use=key.use,
            public=key.public_key,
            valid_from=key.valid_from,
            valid_until=key.valid_until,
            revoked_at=key.revoked_at,
        )

    return lookup


def _receipt_out(message: store.Accepted) -> ReceiptOut:
    return ReceiptOut(message_id=message.id, receipt=SignedObject(**json.loads(message.receipt)))


async def status(session: AsyncSession, message_id: str, caller_id: str) -> MessageStatusOut:
    """A message's state, for its sender and recipient only: to anyone else it does not
    exist (404, so ids cannot be probed)."""
    message = await store.readable_by(session, message_id, caller_id)
    delivery = await store.delivery_of(session, message_id) if message else None
    if message is None or delivery is None:
        raise NotFound("You are not party to a message with this id.")
    bind_ids(message_id=message.id)  # found: the id is the broker's, not just the caller's text
    return MessageStatusOut(
        message_id=message.id,
        status=message_status(delivery),
        accepted_at=message.accepted_at,
        envelope_digest=message.envelope_digest,
        ledger_index=(
            await ledger.index_of(session, message.ledger_seq) if message.ledger_seq else None
        ),
        payload_purged_at=message.purged_at,
        delivery=DeliveryOut(
            status=cast(DeliveryState, delivery.status),
            attempts=delivery.attempts,
            last_attempt_at=delivery.last_attempt_at,
            last_error=delivery.last_error,
            fetched_at=delivery.fetched_at,
            acknowledged_at=delivery.acknowledged_at,
            dead_lettered_at=delivery.dead_lettered_at,
        ),
        rejection=_rejection(delivery) if caller_id == message.sender_id else None,
    )


def _rejection(delivery: Delivery) -> RejectionOut | None:
    """The recipient's signed rejection, as stored once verified (delivery/outcomes.py):
    its code and reasons, which name locations, never content."""
    if delivery.status != DeliveryStatus.REJECTED or delivery.ack is None:
        return None
    try:
        claims = AckClaims.model_validate(jws.parse(json.loads(delivery.ack), jws.TYP_ACK).claims())
    except (ValueError, VerificationError):  # pragma: no cover - verified before it was stored
        return None
    if claims.code is None:  # pragma: no cover - a rejection always names its code
        return None
    return RejectionOut(code=claims.code, reasons=claims.reasons)


def message_status(delivery: Delivery) -> MessageState:
    """A message's state, from its delivery's: ``pending`` is ``accepted`` until the
    recipient fetches it from the pull inbox (then ``delivered``)."""
    if delivery.status == outbox.PENDING:
        return "delivered" if delivery.fetched_at is not None else "accepted"
    return cast(MessageState, delivery.status)

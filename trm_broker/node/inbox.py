"""Receiving at the node's inbox: verify, open, check the payload's schema and that the clear
header is what the payload says, store once, and answer signed: an acknowledgement, or a
rejection naming where the payload does not conform or the header contradicts it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import envelopes, jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.errors import VerificationError
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.payloads import check_payload, read_payload
from trm_broker.domain.projections import mismatches
from trm_broker.domain.signed_objects import (
    HEADER_PAYLOAD_MISMATCH,
    PAYLOAD_INVALID,
    AckClaims,
    RejectionCode,
)
from trm_broker.domain.times import rfc3339
from trm_broker.node import store, withdrawals
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.web.problems import InvalidEnvelope, NotFound
from trm_broker.web.refusals import object_problem


@dataclass(frozen=True)
class Acknowledgement:
    """The node's signed answer to a message: received (stored), or rejected."""

    message_id: str
    ack: dict[str, str]
    rejected: bool = False
    #: Why it was rejected (``AckClaims.code``), for the node's log line.
    code: RejectionCode | None = None


async def receive(
    session: AsyncSession, body: bytes, keys: Keyring, broker: BrokerClient
) -> Acknowledgement:
    # 1-2. The envelope verifier (crypto/envelopes.py): a push is the envelope with the
    #      broker's signed receipt for it, and the envelope verifies with a key of its
    #      sender valid when the broker accepted it.
    try:
        push = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidEnvelope(
            "The body must be {envelope, receipt}, each a flattened JWS."
        ) from exc
    try:
        verified = await envelopes.verify_push(push, _registry_keys(broker), broker.broker_key)
    except VerificationError as exc:
        raise object_problem(exc) from exc
    envelope, digest = verified.envelope.envelope, verified.envelope.digest

    # 3. For one of our participants.
    keyset = keys.current.get(envelope.recipient)
    if keyset is None:
        raise NotFound(f"This node does not serve {envelope.recipient}.")
    opener = keys.opener(envelope.recipient, envelope.sealed.kid)
    if opener is None:
        raise InvalidEnvelope(f"The payload is sealed to key {envelope.sealed.kid}, not held here.")

    # 4. Once only (docs/design.md §8, nodes deduplicate by message id): a repeated delivery gets
    #    the very acknowledgement, or rejection, it got the first time.
    existing = await store.answered(session, envelope.id)
    if existing is not None:
        if existing.envelope_digest != digest:
            raise InvalidEnvelope(f"Message {envelope.id} was received before with other content.")
        ack = json.loads(existing.ack)
        return Acknowledgement(envelope.id, ack, existing.rejected, _code(ack))

    # 5. Open the sealed payload; its binding must match this envelope.
    try:
        plaintext, payload = envelopes.open_payload(envelope, opener)
    except VerificationError as exc:
        raise object_problem(exc) from exc

    # 6-7. The payload must conform to its type's schema, and the signed header and data
    #    categories must be what it says. If not, the payload is not stored and the answer
    #    is a signed rejection: final for the broker, and its reasons name locations only,
    #    never what the payload holds.
    code, reasons = _refusal(envelope, plaintext)

    # 8. Answer with the recipient's signing key; store a payload that conforms, and of one
    #    that does not only the rejection, to answer a repeat with.
    now = datetime.now(UTC)
    claims = AckClaims(
        v=1,
        message_id=envelope.id,
        envelope_digest=digest,
        recipient=envelope.recipient,
        received_at=rfc3339(now),
        status="rejected" if reasons else "received",
        reasons=reasons,
        code=code,
    )
    ack = jws.sign(claims.signed_claims(), keyset.signing, jws.TYP_ACK)
    if reasons:
        session.add(
            store.RejectedMessage(id=envelope.id, envelope_digest=digest, ack=json.dumps(ack))
        )
        return Acknowledgement(envelope.id, ack, rejected=True, code=code)
    row = store.received_row(
        envelope,
        digest=digest,
        payload=canonical_json(payload).decode(),
        ack=json.dumps(ack),
        now=now,
    )
    # 8. A consent withdrawn: what came under it is restricted (docs/node.md). Before the
    #    row is added, so that no query flushes it early: a duplicate then fails at commit.
    await withdrawals.on_arrival(session, row, now)
    session.add(row)
    return Acknowledgement(envelope.id, ack)


async def receive_once(
    session: AsyncSession,
    body: bytes,
    keys: Keyring,
    broker: BrokerClient,
    *,
    before_commit: Callable[[], Awaitable[None]] | None = None,
) -> Acknowledgement:
    """Receive and commit, in one transaction with ``before_commit`` (a push spends its
    nonce there). The same message delivered twice at once (two pushes, or a push and a
    pull) commits once; the other delivery gets the answer that was stored."""
    result = await receive(session, body, keys, broker)
    try:
        if before_commit is not None:
            await before_commit()
        await session.commit()
    except IntegrityError:
        await session.rollback()
        result = await receive(session, body, keys, broker)
        if before_commit is not None:
            await before_commit()
        await session.commit()
    return result


def _refusal(envelope: Envelope, plaintext: bytes) -> tuple[RejectionCode | None, list[str]]:
    """Why the message is refused (its code and reasons), or ``(None, [])`` if it is not.

    6. The payload conforms to its type's schema (contracts/schemas/payloads/).
    7. The clear header and the data categories are the projection of the payload
       (domain/projections.py): the broker enforces the safeguards on the header alone, so a
       header that says other than the sealed payload (a low risk where the payload says
       high, a child's case as an adult's, health data as none) would talk them around.
       Only this node, which opens the payload, can tell.
    """
    reasons = check_payload(envelope.type, plaintext)
    if reasons:
        return PAYLOAD_INVALID, reasons
    found = mismatches(
        envelope.type,
        read_payload(envelope.type, plaintext),
        envelope.created_at,
        envelope.header,
        envelope.data_categories,
    )
    if found:
        return HEADER_PAYLOAD_MISMATCH, [f"{where}: does not match the payload" for where in found]
    return None, []


def _code(ack: dict[str, str]) -> RejectionCode | None:
    """The code of an answer this node signed before (none in an acknowledgement)."""
    try:
        claims = jws.parse(ack, jws.TYP_ACK).claims()
    except VerificationError:
        return None
    code = claims.get("code")
    return code if code in (PAYLOAD_INVALID, HEADER_PAYLOAD_MISMATCH) else None


def _registry_keys(broker: BrokerClient) -> envelopes.KeyLookup:
    """The envelope verifier's key lookup: the broker's registry, as the node last read it."""

    async def lookup(kid: str) -> envelopes.KeyRecord | None:
        key = await broker.registered_key(kid)
        if key is None:
            return None
        return envelopes.KeyRecord(
            kid=key.kid,
            participant=key.participant,
            use=key.use,
            public=key.public,
            valid_from=key.valid_from,
            valid_until=key.valid_until,
            revoked_at=key.revoked_at,
        )

    return lookup

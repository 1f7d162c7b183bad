"""Receiving at the node's inbox: verify, open, check the payload's schema, store once, and
answer signed: an acknowledgement, or a rejection naming where the payload does not conform."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.errors import CryptoError, MalformedError, VerificationError
from trm_broker.crypto.jws import ParsedJws
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.crypto.seal import Binding, open_sealed
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.payloads import check_payload
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.domain.times import rfc3339
from trm_broker.node import store
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.web.problems import BadSignature, InvalidEnvelope, NotFound, UnknownSender


@dataclass(frozen=True)
class Acknowledgement:
    """The node's signed answer to a message: received (stored), or rejected."""

    message_id: str
    ack: dict[str, str]
    rejected: bool = False


async def receive(
    session: AsyncSession, body: bytes, keys: Keyring, broker: BrokerClient
) -> Acknowledgement:
    # 1. A push from the broker: the envelope with the broker's signed receipt for it.
    #    Without this, anyone reaching the inbox could skip every check the broker makes.
    try:
        push = json.loads(body)
        if not isinstance(push, dict) or set(push) != {"envelope", "receipt"}:
            raise MalformedError("a push is an object with envelope and receipt")
        obj = push["envelope"]
        parsed = jws.parse(obj, jws.TYP_ENVELOPE)
        receipt = jws.parse(push["receipt"], jws.TYP_RECEIPT)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise InvalidEnvelope(
            "The body must be {envelope, receipt}, each a flattened JWS."
        ) from exc
    except VerificationError as exc:
        raise InvalidEnvelope(f"The push is not acceptable: {exc}.") from exc
    digest = jws.digest(obj)
    accepted_at = await _verified_acceptance(receipt, digest, broker)

    # 2. The envelope, signed by a key of the sender that was valid when the broker accepted it.
    key = await broker.registered_key(parsed.kid)
    if key is None or key.use != "sig":
        raise UnknownSender(f"No registered signing key has kid {parsed.kid}.", kid=parsed.kid)
    try:
        jws.verify(parsed, load_ed25519_public(key.public))
        envelope = Envelope.model_validate(parsed.claims())
    except VerificationError as exc:
        raise BadSignature(
            f"The envelope's signature does not verify with key {parsed.kid}."
        ) from exc
    except ValidationError as exc:
        raise InvalidEnvelope("The envelope does not match the schema.") from exc
    if envelope.sender != key.participant:
        raise BadSignature(f"Key {parsed.kid} does not belong to sender {envelope.sender}.")
    # Delivery may come long after acceptance (outages, retries): judge the key at the
    # broker's signed acceptance time, not at a created_at the sender chose.
    if not key.valid_at(accepted_at):
        raise UnknownSender(
            f"Signing key {parsed.kid} was revoked or expired when the broker accepted this.",
            kid=parsed.kid,
        )
    if receipt_message_id(receipt) != envelope.id:
        raise BadSignature("The broker's receipt is for another message.")

    # 3. For one of our participants.
    keyset = keys.current.get(envelope.recipient)
    if keyset is None:
        raise NotFound(f"This node does not serve {envelope.recipient}.")
    opener = keys.opener(envelope.recipient, envelope.sealed.kid)
    if opener is None:
        raise InvalidEnvelope(f"The payload is sealed to key {envelope.sealed.kid}, not held here.")

    # 4. Once only (DESIGN.md §8, nodes deduplicate by message id): a repeated delivery gets
    #    the very acknowledgement, or rejection, it got the first time.
    existing = await store.answered(session, envelope.id)
    if existing is not None:
        if existing.envelope_digest != digest:
            raise InvalidEnvelope(f"Message {envelope.id} was received before with other content.")
        return Acknowledgement(envelope.id, json.loads(existing.ack), existing.rejected)

    # 5. Open the sealed payload; its binding must match this envelope.
    binding = Binding(
        id=envelope.id,
        type=envelope.type.value,
        case_ref=envelope.case_ref,
        sender=envelope.sender,
        recipient=envelope.recipient,
    )
    try:
        plaintext = open_sealed(envelope.sealed.model_dump(), opener, binding)
        payload = json.loads(plaintext)
    except (CryptoError, MalformedError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEnvelope("The sealed payload does not open for this envelope.") from exc

    # 6. The payload must conform to its type's schema (contracts/schemas/payloads/). If it
    #    does not, the payload is not stored and the answer is a signed rejection: final for
    #    the broker, and its reasons name locations only, never what the payload holds.
    reasons = check_payload(envelope.type, plaintext)

    # 7. Answer with the recipient's signing key; store a payload that conforms, and of one
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
    )
    ack = jws.sign(claims.signed_claims(), keyset.signing, jws.TYP_ACK)
    if reasons:
        session.add(
            store.RejectedMessage(id=envelope.id, envelope_digest=digest, ack=json.dumps(ack))
        )
        return Acknowledgement(envelope.id, ack, rejected=True)
    session.add(
        store.received_row(
            envelope,
            digest=digest,
            payload=canonical_json(payload).decode(),
            ack=json.dumps(ack),
            now=now,
        )
    )
    return Acknowledgement(envelope.id, ack)


async def receive_once(
    session: AsyncSession, body: bytes, keys: Keyring, broker: BrokerClient
) -> Acknowledgement:
    """Receive and commit. The same message delivered twice at once (two pushes, or a push
    and a pull) commits once; the other delivery gets the answer that was stored."""
    result = await receive(session, body, keys, broker)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        result = await receive(session, body, keys, broker)
    return result


async def _verified_acceptance(receipt: ParsedJws, digest: str, broker: BrokerClient) -> datetime:
    """The receipt is the broker's, for exactly this envelope; return its acceptance time."""
    try:
        key = await broker.broker_key(receipt.kid)
        if key is None:
            raise VerificationError("receipt not signed by the broker's key")
        jws.verify(receipt, key.public)
        claims = receipt.claims()
        if claims.get("envelope_digest") != digest:
            raise VerificationError("receipt is for another envelope")
        accepted_at = datetime.fromisoformat(str(claims["accepted_at"]))
        # A retired key vouches only for what the broker accepted before retiring it.
        if not key.vouches_for_acceptance_at(accepted_at):
            raise VerificationError("receipt signed by a key the broker had retired")
        return accepted_at
    except (VerificationError, KeyError, ValueError) as exc:
        raise BadSignature(f"The broker's receipt does not verify: {exc}.") from exc


def receipt_message_id(receipt: ParsedJws) -> object:
    return receipt.claims().get("message_id")

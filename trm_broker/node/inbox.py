"""Receiving at the node's inbox: verify, open, store once, acknowledge (signed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.errors import CryptoError, MalformedError, VerificationError
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.crypto.seal import Binding, open_sealed
from trm_broker.domain.envelope import Envelope
from trm_broker.node import store
from trm_broker.node.broker_client import BrokerClient
from trm_broker.node.keyring import Keyring
from trm_broker.web.problems import BadSignature, InvalidEnvelope, NotFound, UnknownSender


@dataclass(frozen=True)
class Acknowledgement:
    ack: dict[str, str]


async def receive(
    session: AsyncSession, body: bytes, keys: Keyring, broker: BrokerClient
) -> Acknowledgement:
    # 1. A JWS envelope, EdDSA, signed by a registered, usable key of the sender.
    try:
        obj = json.loads(body)
        parsed = jws.parse(obj, jws.TYP_ENVELOPE)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEnvelope("The body must be a JWS in flattened JSON serialisation.") from exc
    except VerificationError as exc:
        raise InvalidEnvelope(f"The JWS is not acceptable: {exc}.") from exc
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
    # The broker checked the key was usable when it accepted the envelope; delivery may come
    # later (outages, retries), so here the key must have been valid when the envelope was made.
    if not key.valid_at(envelope.created_at):
        raise UnknownSender(
            f"Signing key {parsed.kid} was revoked or expired when the envelope was created.",
            kid=parsed.kid,
        )

    # 2. For one of our participants.
    keyset = keys.current.get(envelope.recipient)
    if keyset is None:
        raise NotFound(f"This node does not serve {envelope.recipient}.")
    opener = keys.opener(envelope.recipient, envelope.sealed.kid)
    if opener is None:
        raise InvalidEnvelope(f"The payload is sealed to key {envelope.sealed.kid}, not held here.")

    # 3. Once only: a repeated delivery gets the acknowledgement it got the first time.
    digest = jws.digest(obj)
    existing = await store.received(session, envelope.id)
    if existing is not None:
        if existing.envelope_digest != digest:
            raise InvalidEnvelope(f"Message {envelope.id} was received before with other content.")
        return Acknowledgement(json.loads(existing.ack))

    # 4. Open the sealed payload; its binding must match this envelope.
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

    # 5. Store, then acknowledge with the recipient's signing key.
    now = datetime.now(UTC)
    ack = jws.sign(
        {
            "v": 1,
            "message_id": envelope.id,
            "envelope_digest": digest,
            "recipient": envelope.recipient,
            "received_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "status": "received",
        },
        keyset.signing,
        jws.TYP_ACK,
    )
    session.add(
        store.ReceivedMessage(
            id=envelope.id,
            type=envelope.type.value,
            case_ref=envelope.case_ref,
            sender=envelope.sender,
            recipient=envelope.recipient,
            created_at=envelope.created_at,
            received_at=now,
            envelope_digest=digest,
            header=canonical_json(envelope.header).decode(),
            payload=canonical_json(payload).decode(),
            ack=json.dumps(ack),
        )
    )
    return Acknowledgement(ack)

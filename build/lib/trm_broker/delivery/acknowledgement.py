"""Checking a recipient's signed answer to one delivered envelope: an acknowledgement that it
was stored, or a rejection of its payload (with reasons). Both are final."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.errors import MalformedError, VerificationError
from trm_broker.crypto.jws import ParsedJws
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.domain.participants import KeyUse
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store import participants as registry
from trm_broker.store.models import ParticipantKey


class AckRefused(Exception):
    """The acknowledgement is not a valid signed ack of this envelope; ``code`` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


#: The codes a refused answer gets: in a delivery's `last_error` and the pull inbox's
#: problem `reason`; the acknowledgement vectors (contracts/vectors/) name them too.
ACK_CODES = (
    "ack_malformed",
    "ack_unknown_key",
    "ack_key_not_usable",
    "ack_bad_signature",
    "ack_mismatch",
)


async def verify_ack(
    session: AsyncSession,
    ack: Any,
    message_id: str,
    recipient_id: str,
    envelope_digest: str,
    now: datetime,
) -> AckClaims:
    """An answer counts only if the recipient signed it, for this message and these bytes;
    return its claims (``status`` says whether the node stored or rejected the message)."""
    parsed = parse_ack(ack)
    key = await registry.key(session, parsed.kid)
    return check_ack(parsed, key, message_id, recipient_id, envelope_digest, now)


def parse_ack(ack: Any) -> ParsedJws:
    """1. A flattened JWS, EdDSA, typ ``trm-ack+jws`` (:func:`jws.parse`)."""
    try:
        return jws.parse(ack, jws.TYP_ACK)
    except VerificationError as exc:  # MalformedError included
        raise AckRefused("ack_malformed") from exc


def check_ack(
    parsed: ParsedJws,
    key: ParticipantKey | None,
    message_id: str,
    recipient_id: str,
    envelope_digest: str,
    now: datetime,
) -> AckClaims:
    """2.-5. The checks of an answer once its key (``parsed.kid``) is looked up."""
    # 2. A signing key of the recipient's, 3. usable now (the broker checks an answer when
    #    it arrives), 4. the signature over the canonical claims.
    if key is None or key.use is not KeyUse.SIG or key.participant_id != recipient_id:
        raise AckRefused("ack_unknown_key")
    if not registry.is_usable(key, now):
        raise AckRefused("ack_key_not_usable")
    try:
        jws.verify(parsed, load_ed25519_public(key.public_key))
    except VerificationError as exc:
        raise AckRefused("ack_bad_signature") from exc
    try:
        claims = parsed.claims()
    except MalformedError as exc:  # not RFC 8785 JSON, or not an object
        raise AckRefused("ack_malformed") from exc
    # 5. For exactly this message, these envelope bytes and this recipient.
    if (
        claims.get("message_id") != message_id
        or claims.get("envelope_digest") != envelope_digest
        or claims.get("recipient") != recipient_id
        or claims.get("status") not in ("received", "rejected")
    ):
        raise AckRefused("ack_mismatch")
    try:
        return AckClaims.model_validate(claims)
    except ValidationError as exc:  # e.g. a rejection without reasons, an unknown member
        raise AckRefused("ack_malformed") from exc

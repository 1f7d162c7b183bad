"""Checking a recipient's signed answer to one delivered envelope: an acknowledgement that it
was stored, or a rejection of its payload (with reasons). Both are final."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto import jws
from trm_broker.crypto.errors import VerificationError
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.domain.participants import KeyUse
from trm_broker.domain.signed_objects import AckClaims
from trm_broker.store import participants as registry


class AckRefused(Exception):
    """The acknowledgement is not a valid signed ack of this envelope; ``code`` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


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
    try:
        parsed = jws.parse(ack, jws.TYP_ACK)
    except VerificationError as exc:
        raise AckRefused("ack_malformed") from exc
    key = await registry.key(session, parsed.kid)
    if key is None or key.use is not KeyUse.SIG or key.participant_id != recipient_id:
        raise AckRefused("ack_unknown_key")
    if not registry.is_usable(key, now):
        raise AckRefused("ack_key_not_usable")
    try:
        jws.verify(parsed, load_ed25519_public(key.public_key))
        claims = parsed.claims()
    except VerificationError as exc:
        raise AckRefused("ack_bad_signature") from exc
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

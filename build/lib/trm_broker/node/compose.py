"""Composing an envelope (docs/design.md §5): seal the payload to the recipient, then sign
the whole."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trm_broker.crypto import jws
from trm_broker.crypto.canonical import canonical_json
from trm_broker.crypto.keys import SigningKey
from trm_broker.crypto.seal import Binding, seal
from trm_broker.domain.envelope import Envelope
from trm_broker.domain.ids import uuid7
from trm_broker.domain.messages import DataCategory, MessageType


def compose_envelope(
    *,
    signing_key: SigningKey,
    sender: str,
    recipient: str,
    recipient_enc_kid: str,
    recipient_enc_public: str,
    recipient_enc_alg: str = "X25519",
    type: MessageType,
    case_ref: str,
    header: dict[str, Any],
    payload: dict[str, Any],
    data_categories: list[DataCategory],
    consent_ref: str | None,
    in_reply_to: str | None,
    now: datetime,
    message_id: str | None = None,
) -> tuple[Envelope, dict[str, str]]:
    """Return the envelope and its JWS. The envelope model validates before anything is signed.

    The payload is sealed with the suite of the recipient's key: ``recipient_enc_alg`` is the
    ``alg`` the registry lists for it (X25519 or MLKEM768-X25519).
    """
    message_id = message_id or uuid7()
    binding = Binding(
        id=message_id, type=type.value, case_ref=case_ref, sender=sender, recipient=recipient
    )
    sealed = seal(
        canonical_json(payload),
        recipient_enc_kid,
        recipient_enc_public,
        binding,
        alg=recipient_enc_alg,
    )
    envelope = Envelope.model_validate(
        {
            "v": 1,
            "id": message_id,
            "type": type,
            "case_ref": case_ref,
            "sender": sender,
            "recipient": recipient,
            "created_at": now,
            "consent_ref": consent_ref,
            "data_categories": data_categories,
            "header": header,
            "in_reply_to": in_reply_to,
            "sealed": sealed,
        }
    )
    claims = envelope.model_dump(mode="json", exclude_none=True)
    return envelope, jws.sign(claims, signing_key, jws.TYP_ENVELOPE)


def resign(
    signed: dict[str, str], signing_key: SigningKey, now: datetime
) -> tuple[Envelope, dict[str, str]]:
    """The same envelope (id, header, sealed payload) signed again with ``created_at`` now.

    For a queued message the broker refused as stale after an outage: it never accepted that
    id (a stored one is answered its receipt before freshness is checked), so the message
    keeps its id and is not sent twice. The clear header is kept as it was computed.
    """
    claims = jws.parse(signed, jws.TYP_ENVELOPE).claims()
    envelope = Envelope.model_validate({**claims, "created_at": now})
    resigned = envelope.model_dump(mode="json", exclude_none=True)
    return envelope, jws.sign(resigned, signing_key, jws.TYP_ENVELOPE)

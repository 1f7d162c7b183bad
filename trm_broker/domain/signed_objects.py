"""The claims of the broker's receipt and of a recipient's acknowledgement (DESIGN.md §5).

Both travel as JWS (flattened JSON, EdDSA) over their RFC 8785 canonical JSON; the
``typ`` header is ``trm-receipt+jws`` or ``trm-ack+jws``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN

DIGEST_PATTERN = r"^sha-256:[A-Za-z0-9_-]{43}$"


class ReceiptClaims(BaseModel):
    """Signed by the broker's key (`GET /v1/broker`) when it has stored an envelope."""

    model_config = ConfigDict(extra="forbid", title="Receipt")
    v: Literal[1]
    message_id: str = Field(pattern=UUID7_PATTERN)
    envelope_digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="SHA-256 of the RFC 8785 JSON of the envelope's JWS object, base64url.",
    )
    accepted_at: str = Field(description="RFC 3339 UTC time the broker committed it.")
    ledger_index: int | None = Field(
        description="Null: entries get their index from the ledger's sequencer within a second "
        "of acceptance; `GET /v1/messages/{id}` then shows it."
    )
    ledger_entry: str | None = Field(
        None,
        pattern=DIGEST_PATTERN,
        description="SHA-256 of the ledger entry (RFC 8785 JSON) recording the acceptance.",
    )


class AckClaims(BaseModel):
    """Signed by the recipient's signing key when its node has stored and opened a message."""

    model_config = ConfigDict(extra="forbid", title="Acknowledgement")
    v: Literal[1]
    message_id: str = Field(pattern=UUID7_PATTERN)
    envelope_digest: str = Field(pattern=DIGEST_PATTERN)
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    received_at: str = Field(description="RFC 3339 UTC time the node stored it.")
    status: Literal["received"]

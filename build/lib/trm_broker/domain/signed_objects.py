"""The claims of the broker's receipt, of a recipient's acknowledgement (docs/design.md §5)
and of an operator's key statement (§4).

Each travels as JWS (flattened JSON, EdDSA) over its RFC 8785 canonical JSON; the ``typ``
header is ``trm-receipt+jws``, ``trm-ack+jws`` or ``trm-key+jws``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN

DIGEST_PATTERN = r"^sha-256:[A-Za-z0-9_-]{43}$"

#: Why a recipient's node rejected a message (``AckClaims.code``).
RejectionCode = Literal["payload-invalid", "header-payload-mismatch"]
PAYLOAD_INVALID: RejectionCode = "payload-invalid"
#: The header (or the data categories) says other than the payload: the sender's node lied
#: or is broken; the broker raises an alert (docs/consent-and-workflow.md).
HEADER_PAYLOAD_MISMATCH: RejectionCode = "header-payload-mismatch"


def absent_when_none(schema: dict[str, Any]) -> None:
    """For a member left out, never null, when it has no value: no ``default: null`` in the
    published schema of a member whose type has no null."""
    schema.pop("default", None)


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
    """Signed by the recipient's signing key once its node has opened a message: `received`
    when it stored it; `rejected`, with a code and reasons, when the payload does not conform
    to its type's schema (`schemas/payloads/`), or when the clear header or data categories
    say other than the payload (docs/design.md §5): the node keeps only its signed answer,
    never the payload. Either is final."""

    model_config = ConfigDict(extra="forbid", title="Acknowledgement")
    v: Literal[1]
    message_id: str = Field(pattern=UUID7_PATTERN)
    envelope_digest: str = Field(pattern=DIGEST_PATTERN)
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    received_at: str = Field(description="RFC 3339 UTC time the node stored or refused it.")
    status: Literal["received", "rejected"]
    reasons: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list,
        max_length=20,
        description="Only in a rejection, never empty there: where the payload does not "
        "conform and how (e.g. `payload/immediate_needs/0: not a known code`), or which header "
        "fields say other than the payload (e.g. `header/risk_level: does not match the "
        "payload`, `data_categories: does not match the payload`). Locations and kinds of "
        "error only, never a value from the payload.",
    )
    code: RejectionCode | None = Field(
        None,
        description="Only in a rejection, and always there: why the node refused the message. "
        "`payload-invalid`: the payload does not conform to its type's schema. "
        "`header-payload-mismatch`: the signed header or data categories contradict the "
        "payload they were computed from, a finding against the sender.",
    )

    @model_validator(mode="after")
    def _reasons_only_in_a_rejection(self) -> AckClaims:
        if (self.status == "rejected") != bool(self.reasons):
            raise ValueError("a rejection names its reasons; a receipt names none")
        if (self.status == "rejected") != (self.code is not None):
            raise ValueError("a rejection names its code; a receipt names none")
        return self

    def signed_claims(self) -> dict[str, Any]:
        """The claims to sign: ``reasons`` and ``code`` appear only in a rejection."""
        return self.model_dump(
            mode="json", exclude=None if self.status == "rejected" else {"reasons", "code"}
        )


class KeyStatementClaims(BaseModel):
    """Signed by an operator's signing key when it registers a participant's key or adds one
    (docs/design.md §4): this key is this participant's. A node believes a registry key only
    if a statement by an operator key it pins says so, so a key written straight into the
    broker's database is not believed (docs/security.md)."""

    model_config = ConfigDict(extra="forbid", title="Key statement")
    v: Literal[1]
    participant: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    kid: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$", description="The key's RFC 7638 thumbprint.")
    use: Literal["sig", "enc"]
    alg: Literal["Ed25519", "X25519", "MLKEM768-X25519"]
    public: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$",
        max_length=2048,
        description="The public key, unpadded base64url, exactly as the registry lists it.",
    )
    stated_at: str = Field(description="RFC 3339 UTC time the operator signed it.")

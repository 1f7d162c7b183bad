"""The envelope (docs/design.md §5): the signed JSON object a message travels in.

The clear part is routing and workflow metadata without personal data; the personal data
is in ``sealed``, opened only by the recipient.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import HEADER_MODELS, DataCategory, MessageType
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN
from trm_broker.domain.times import UtcTime

CASE_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"
CONSENT_REF_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_B64URL = r"^[A-Za-z0-9_-]+$"


#: The HPKE suites a payload may be sealed with (RFC 9180 KEM / KDF / AEAD): the one for the
#: recipient's encryption key, X25519 or the MLKEM768-X25519 post-quantum hybrid.
SealSuite = Literal[
    "DHKEM-X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305",
    "MLKEM768-X25519/HKDF-SHA256/ChaCha20Poly1305",
]


class Sealed(BaseModel):
    """An HPKE-sealed payload: suite, recipient key id, encapsulated key, ciphertext."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: SealSuite
    kid: str = Field(max_length=100)
    enc: str = Field(pattern=_B64URL, max_length=4096)
    ct: str = Field(pattern=_B64URL)


class Envelope(BaseModel):
    """The signed envelope. ``id`` is the idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1]
    id: str = Field(pattern=UUID7_PATTERN)
    type: MessageType
    case_ref: str = Field(pattern=CASE_REF_PATTERN)
    sender: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    recipient: str = Field(pattern=PARTICIPANT_ID_PATTERN)
    created_at: UtcTime
    consent_ref: str | None = Field(None, pattern=CONSENT_REF_PATTERN)
    data_categories: list[DataCategory] = Field(default_factory=list, max_length=7)
    header: dict[str, Any]
    in_reply_to: str | None = Field(None, pattern=UUID7_PATTERN)
    sealed: Sealed

    @field_validator("data_categories")
    @classmethod
    def _unique(cls, value: list[DataCategory]) -> list[DataCategory]:
        if len(set(value)) != len(value):
            raise ValueError("data_categories must not repeat")
        return value

    @model_validator(mode="after")
    def _header_fits_type(self) -> Envelope:
        HEADER_MODELS[self.type].model_validate(self.header)
        if self.sender == self.recipient:
            raise ValueError("sender and recipient must differ")
        return self


def is_fresh(created_at: datetime, now: datetime, skew: timedelta) -> bool:
    """Whether ``created_at`` lies within ``skew`` of ``now`` on either side (replay window)."""
    return abs(now - created_at) <= skew

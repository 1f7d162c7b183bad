"""Wire models of the registry."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from trm_broker.domain.countries import CountryCode
from trm_broker.domain.participants import PARTICIPANT_ID_PATTERN, ParticipantKind

_B64URL = r"^[A-Za-z0-9_-]+$"


class SigningKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kid: str | None = Field(
        None, max_length=64, description="RFC 7638 thumbprint; checked if given."
    )
    alg: Literal["Ed25519"]
    public: str = Field(pattern=_B64URL, max_length=64)


class EncryptionKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kid: str | None = Field(
        None, max_length=64, description="RFC 7638 thumbprint; checked if given."
    )
    alg: Literal["X25519"]
    public: str = Field(pattern=_B64URL, max_length=64)


class KeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signing: SigningKeyIn
    encryption: EncryptionKeyIn


class KeyRotationIn(BaseModel):
    """A new key for a participant; its current key of the same use expires after the overlap."""

    model_config = ConfigDict(extra="forbid")
    use: Literal["sig", "enc"]
    alg: Literal["Ed25519", "X25519"]
    public: str = Field(pattern=_B64URL, max_length=64)
    kid: str | None = Field(
        None, max_length=64, description="RFC 7638 thumbprint; checked if given."
    )
    overlap_seconds: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=90 * 24 * 3600,
        description="How long the previous key stays valid beside the new one.",
    )


class ParticipantIn(BaseModel):
    """A new participant, as the operator registers it (public keys from `keys new`)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=PARTICIPANT_ID_PATTERN, examples=["ng.naptip"])
    kind: ParticipantKind
    country: CountryCode = Field(examples=["NG"])
    inbox_url: AnyHttpUrl | None = Field(
        None, description="The node's inbox; omit for pull mode.", max_length=2048
    )
    keys: KeysIn


class KeyOut(BaseModel):
    kid: str
    use: Literal["sig", "enc"]
    alg: str
    public: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None


class ParticipantOut(BaseModel):
    """A registry entry. Inbox URLs are not published: only the broker calls them."""

    id: str
    kind: ParticipantKind
    country: str
    delivery: Literal["push", "pull"]
    created_at: datetime
    keys: list[KeyOut]


class ParticipantList(BaseModel):
    participants: list[ParticipantOut]

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
    alg: Literal["X25519", "MLKEM768-X25519"]
    public: str = Field(pattern=_B64URL, max_length=2048)


class SignedStatement(BaseModel):
    """A key statement (`schemas/key-statement.v1.json`): a JWS in flattened JSON, `typ`
    `trm-key+jws`, signed with the same operator key as the request."""

    model_config = ConfigDict(extra="forbid")
    protected: str = Field(pattern=_B64URL, max_length=1024)
    payload: str = Field(pattern=_B64URL, max_length=4096)
    signature: str = Field(pattern=_B64URL, max_length=128)


class KeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signing: SigningKeyIn
    encryption: EncryptionKeyIn


class KeyRotationIn(BaseModel):
    """A new key for a participant; its current key of the same use expires after the overlap."""

    model_config = ConfigDict(extra="forbid")
    use: Literal["sig", "enc"]
    alg: Literal["Ed25519", "X25519", "MLKEM768-X25519"]
    public: str = Field(pattern=_B64URL, max_length=2048)
    kid: str | None = Field(
        None, max_length=64, description="RFC 7638 thumbprint; checked if given."
    )
    overlap_seconds: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=90 * 24 * 3600,
        description="How long the previous key stays valid beside the new one.",
    )
    statement: SignedStatement | None = Field(
        None,
        description="The operator's key statement for this key (`trm-broker participants "
        "rotate` signs it). Without it, nodes that pin the operator's keys do not believe "
        "the key.",
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
    statements: list[SignedStatement] = Field(
        default_factory=list,
        max_length=2,
        description="The operator's key statements for both keys, or none (`trm-broker "
        "participants add` signs them). Without them, nodes that pin the operator's keys do "
        "not believe the keys.",
    )


class KeyOut(BaseModel):
    kid: str
    use: Literal["sig", "enc"]
    alg: str
    public: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None


class ChangeProof(BaseModel):
    """The operator's signed request (RFC 9421) that made a change, as verified.

    Rebuild the signature base from ``method``, ``target_uri``, ``content_digest`` and
    ``signature_input`` and verify ``signature`` with the operator's key
    (contracts/README.md, "Signed requests"). The body itself is not published (it holds
    the inbox URL); ``content_digest`` is its SHA-256, and the signature covers it.
    """

    method: str
    target_uri: str
    content_digest: str
    signature_input: str
    signature: str


class ChangeOut(BaseModel):
    """One recorded registry change. ``proof`` is null only for the operator bootstrap."""

    id: str
    action: Literal["operator.bootstrapped", "participant.registered", "key.added", "key.revoked"]
    kid: str | None
    operator: str
    operator_kid: str
    recorded_at: datetime
    proof: ChangeProof | None
    statements: list[SignedStatement] = Field(
        default_factory=list,
        description="The operator's key statements sent with the change, one per key it "
        "added (`schemas/key-statement.v1.json`): what a node checks a registry key against.",
    )


class ParticipantOut(BaseModel):
    """A registry entry. Inbox URLs are not published: only the broker calls them."""

    id: str
    kind: ParticipantKind
    country: str
    delivery: Literal["push", "pull"]
    created_at: datetime
    keys: list[KeyOut] = Field(description="Current and past keys, with their validity.")
    changes: list[ChangeOut] = Field(description="Every change, signed by an operator.")


class ParticipantList(BaseModel):
    participants: list[ParticipantOut]

"""`/v1/broker`: the broker's own public key, to verify its receipts and checkpoints."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from trm_broker import __version__
from trm_broker.api.deps import State
from trm_broker.crypto.keys import load_ed25519_public
from trm_broker.ledger.note import NoteVerifier

router = APIRouter(prefix="/v1/broker", tags=["broker"])


class LedgerKeyOut(BaseModel):
    origin: str = Field(description="The checkpoints' origin line and signed-note key name.")
    verifier_key: str = Field(
        description="C2SP signed-note verifier key of the checkpoints: <name>+<key id>+<key>. "
        "Auditors should obtain it out of band too, and pin it."
    )
    retired_verifier_keys: list[str] = Field(
        default_factory=list,
        description="Verifier keys of the broker's retired keys: checkpoints they signed "
        "stay verifiable with them.",
    )


class RetiredKeyOut(BaseModel):
    kid: str
    alg: str = "Ed25519"
    public: str
    retired_at: datetime = Field(
        description="Receipts by this key are valid for messages accepted before this time."
    )


class NextKeyOut(BaseModel):
    kid: str
    alg: str = "Ed25519"
    public: str


class BrokerOut(BaseModel):
    version: str
    signing_key: dict[str, str]
    next_key: NextKeyOut | None = Field(
        None,
        description="The key prepared for the broker's next rotation: it signs nothing yet. "
        "Nodes that pin the broker's keys pin it beside the current one before the "
        "rotation (after checking it out of band).",
    )
    retired_keys: list[RetiredKeyOut] = Field(
        default_factory=list,
        description="Keys the broker signed with before its current one (public halves).",
    )
    ledger: LedgerKeyOut


@router.get("", response_model=BrokerOut)
async def broker_info(state: State) -> BrokerOut:
    key, origin = state.signing_key, state.settings.ledger_origin
    return BrokerOut(
        version=__version__,
        signing_key={"kid": key.kid, "alg": "Ed25519", "public": key.public_b64},
        next_key=NextKeyOut(kid=state.next_key.kid, public=state.next_key.public_b64)
        if state.next_key is not None
        else None,
        retired_keys=[
            RetiredKeyOut(kid=r.kid, public=r.public_b64, retired_at=r.retired_at)
            for r in state.retired_keys
        ],
        ledger=LedgerKeyOut(
            origin=origin,
            verifier_key=state.note_signer().verifier().vkey(),
            retired_verifier_keys=[
                NoteVerifier.of(origin, load_ed25519_public(r.public_b64)).vkey()
                for r in state.retired_keys
            ],
        ),
    )

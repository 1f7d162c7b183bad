"""`/v1/broker`: the broker's own public key, to verify its receipts and checkpoints."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from trm_broker import __version__
from trm_broker.api.deps import State

router = APIRouter(prefix="/v1/broker", tags=["broker"])


class LedgerKeyOut(BaseModel):
    origin: str = Field(description="The checkpoints' origin line and signed-note key name.")
    verifier_key: str = Field(
        description="C2SP signed-note verifier key of the checkpoints: <name>+<key id>+<key>. "
        "Auditors should obtain it out of band too, and pin it."
    )


class BrokerOut(BaseModel):
    version: str
    signing_key: dict[str, str]
    ledger: LedgerKeyOut


@router.get("", response_model=BrokerOut)
async def broker_info(state: State) -> BrokerOut:
    key = state.signing_key
    return BrokerOut(
        version=__version__,
        signing_key={"kid": key.kid, "alg": "Ed25519", "public": key.public_b64},
        ledger=LedgerKeyOut(
            origin=state.settings.ledger_origin, verifier_key=state.note_signer().verifier().vkey()
        ),
    )

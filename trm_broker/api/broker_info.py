"""`/v1/broker`: the broker's own public key, to verify its receipts."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from trm_broker import __version__
from trm_broker.api.deps import State

router = APIRouter(prefix="/v1/broker", tags=["broker"])


class BrokerOut(BaseModel):
    version: str
    signing_key: dict[str, str]


@router.get("", response_model=BrokerOut)
async def broker_info(state: State) -> BrokerOut:
    key = state.signing_key
    return BrokerOut(
        version=__version__,
        signing_key={"kid": key.kid, "alg": "Ed25519", "public": key.public_b64},
    )

"""The node's inbox accepts pushes signed by the broker only (RFC 9421, our profile)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import SignedRequest
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.store import NodeNonce
from trm_broker.settings import Settings
from trm_broker.store import nonces
from trm_broker.web.problems import Unavailable
from trm_broker.web.signed_requests import verify_signed_request


async def broker_signed_body(
    request: Request, settings: Settings, broker: BrokerClient, session: AsyncSession
) -> bytes:
    """The body of a push, once its signature is the broker's, fresh and not replayed
    (the same check the broker makes of every signed call: web/signed_requests.py).

    The key id must be the broker's (``GET /v1/broker``): its current key, or one it
    retired within the last hour (replicas restart one by one after a rotation).
    """
    window = timedelta(seconds=settings.clock_skew_seconds)

    async def resolve(keyid: str, now: datetime) -> Ed25519PublicKey:
        try:
            broker_key = await broker.broker_key(keyid)
        except BrokerError as exc:
            raise Unavailable("The broker's key is not known yet; retry later.") from exc
        if broker_key is None or not broker_key.signs_pushes_at(now):
            raise VerificationError(
                "The push is not signed with the broker's key.", code=Code.NOT_BROKER_KEY
            )
        return broker_key.public

    async def spend(keyid: str, signed: SignedRequest, now: datetime) -> bool:
        fresh = await nonces.spend(
            session, keyid, signed.nonce, signed.created, window, table=NodeNonce
        )
        await nonces.prune(session, now, table=NodeNonce)
        return fresh

    verified = await verify_signed_request(
        request,
        limit=settings.max_envelope_bytes,
        public_url=settings.node_public_url,
        window=window,
        resolve=resolve,
        spend=spend,
        unsigned="Only the broker pushes to this inbox, with a signed request.",
    )
    await session.commit()
    return verified.body

"""The node's inbox accepts pushes signed by the broker only (RFC 9421, our profile)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto.errors import Code, VerificationError
from trm_broker.crypto.http_signatures import RequestSignatureError, SignedRequest
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.store import NodeNonce
from trm_broker.settings import Settings
from trm_broker.store import nonces
from trm_broker.web.problems import Unavailable
from trm_broker.web.refusals import request_problem
from trm_broker.web.signed_request_check import verify_signed_request

#: How often a node forgets nonces too old to replay (in a push's transaction).
_PRUNE_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Push:
    """A push whose signature is the broker's and fresh; its nonce is not spent yet: the
    inbox spends it in the transaction that stores the message (one commit per push), or
    on its own when the push is refused (:meth:`spend_alone`)."""

    body: bytes
    _spend: Callable[[], Awaitable[None]]

    async def spend(self) -> None:
        """Spend the nonce in the session's transaction; spent before: 401, a replay."""
        await self._spend()

    async def spend_alone(self, session: AsyncSession) -> None:
        """After a refusal rolled the push's transaction back: spend the nonce on its own,
        so the refused push cannot be replayed either (a replay's 401 if it raced this)."""
        await session.rollback()
        await self._spend()
        await session.commit()


async def broker_push(
    request: Request, settings: Settings, broker: BrokerClient, session: AsyncSession
) -> Push:
    """A push, once its signature is the broker's and fresh (the same check the broker
    makes of every signed call: web/signed_request_check.py). Its nonce is spent by the caller,
    in its own transaction (:class:`Push`); nothing is written here.

    The key id must be the broker's (``GET /v1/broker``): its current key, or one it
    retired within the last hour (replicas restart one by one after a rotation).
    """
    window = timedelta(seconds=settings.clock_skew_seconds)
    state = request.app.state

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

    pending: list[tuple[str, SignedRequest, datetime]] = []

    async def verified(keyid: str, signed: SignedRequest, now: datetime) -> bool:
        pending.append((keyid, signed, now))
        return True

    checked = await verify_signed_request(
        request,
        limit=settings.max_envelope_bytes,
        public_url=settings.node_public_url,
        window=window,
        resolve=resolve,
        spend=verified,
        unsigned="Only the broker pushes to this inbox, with a signed request.",
    )
    keyid, signed, now = pending[0]

    async def spend() -> None:
        last = getattr(state, "nonces_pruned_at", None)
        if last is None or now - last > _PRUNE_EVERY:
            state.nonces_pruned_at = now
            await nonces.prune(session, now, table=NodeNonce)  # only nonces past replaying
        if not await nonces.spend(
            session, keyid, signed.nonce, signed.created, window, table=NodeNonce
        ):
            raise request_problem(
                RequestSignatureError(
                    "This signed request was already received; sign every request afresh.",
                    code=Code.REPLAYED,
                    kid=keyid,
                )
            )

    return Push(checked.body, spend)

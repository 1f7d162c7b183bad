"""The node's inbox accepts pushes signed by the broker only (RFC 9421, our profile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.crypto.http_signatures import RequestSignatureError, verify_request
from trm_broker.node.broker_client import BrokerClient, BrokerError
from trm_broker.node.store import NodeNonce
from trm_broker.settings import Settings
from trm_broker.store import nonces
from trm_broker.web.problems import BadSignature, ReplayedRequest, Unauthenticated, Unavailable
from trm_broker.web.signed_requests import signed_parts, target_uri


async def broker_signed_body(
    request: Request, settings: Settings, broker: BrokerClient, session: AsyncSession
) -> bytes:
    """The body of a push, once its signature is the broker's, fresh and not replayed.

    1. Read the body (bounded) and the signature's key id.
    2. The key id must be the broker's (``GET /v1/broker``): its current key, or one it
       retired within the last hour (replicas restart one by one after a rotation).
    3. Verify signature, content digest and time window.
    4. Spend the nonce.
    """
    body, lines, keyid = await signed_parts(request, settings.max_envelope_bytes)
    if keyid is None:
        raise Unauthenticated("Only the broker pushes to this inbox, with a signed request.")
    try:
        broker_key = await broker.broker_key(keyid)
    except BrokerError as exc:
        raise Unavailable("The broker's key is not known yet; retry later.") from exc
    now = datetime.now(UTC)
    if broker_key is None or not broker_key.signs_pushes_at(now):
        raise Unauthenticated("The push is not signed with the broker's key.")
    window = timedelta(seconds=settings.clock_skew_seconds)
    try:
        signed = verify_request(
            request.method,
            target_uri(request, settings.node_public_url),
            lines,
            body,
            broker_key.public,
            keyid,
            now=now,
            max_age=window,
            skew=window,
        )
    except RequestSignatureError as exc:
        raise BadSignature(f"{exc}.") from exc
    if not await nonces.remember(
        session, keyid, signed.nonce, signed.created + 2 * window, table=NodeNonce
    ):
        raise ReplayedRequest("This push was already received; the broker signs each afresh.")
    await nonces.prune(session, now, table=NodeNonce)
    await session.commit()
    return body

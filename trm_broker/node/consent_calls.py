"""Registering a consent at the broker through the node, signed by the sending focal point
(docs/design.md §7): one path for the JSON API (`POST /consents`) and the web app's consent
page, done once per ``Idempotency-Key`` (:func:`outbox_calls.once`)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node import outbox_calls
from trm_broker.node.access import Principal
from trm_broker.node.outbox_calls import Sending
from trm_broker.node.schemas import ConsentRequest
from trm_broker.node.sending import choose_sender


async def register(
    sending: Sending,
    session: AsyncSession,
    principal: Principal,
    request: Request,
    body: ConsentRequest,
    *,
    route: str,
    key: str | None,
) -> JSONResponse:
    """The consent registered at the broker (201 and the broker's record), signed with the
    caller's organisation's key; a refusal raises the broker's problem."""
    keys = principal.keyring(sending.keys)
    sender = choose_sender(keys, body.sender)

    async def call() -> dict[str, Any]:
        return await sending.broker.register_consent(keys.current[sender].signing, body.consent)

    return await outbox_calls.once(
        sending, session, principal, request, route=route, key=key, status=201, call=call
    )

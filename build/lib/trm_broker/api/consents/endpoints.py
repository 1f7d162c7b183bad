"""`/v1/consents`: register (the sending focal point), read (parties), withdraw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from trm_broker.api.auth import SignedCaller
from trm_broker.api.consents import service
from trm_broker.api.consents.schemas import ConsentIn, ConsentOut
from trm_broker.api.deps import Session, State
from trm_broker.web.body import parse_json
from trm_broker.web.problems import Forbidden
from trm_broker.web.query import ConsentId

router = APIRouter(prefix="/v1/consents", tags=["consent"])

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConsentIn"}}},
    }
}


@router.post("", status_code=201, response_model=ConsentOut, openapi_extra=_BODY)
async def register_consent(caller: SignedCaller, session: Session) -> ConsentOut:
    """Register a consent record (signed request of the sending focal point)."""
    new = parse_json(ConsentIn, caller.body)
    created = await service.register(session, new, caller, datetime.now(UTC))
    await session.commit()
    return created


@router.get("/{consent_id}", response_model=ConsentOut)
async def read_consent(consent_id: ConsentId, caller: SignedCaller, session: Session) -> ConsentOut:
    """A consent, for its registrant, the participants it names and the case's parties."""
    return service.out(await service.readable(session, consent_id, caller))


@router.post("/{consent_id}/withdraw", response_model=ConsentOut)
async def withdraw_consent(
    consent_id: ConsentId, caller: SignedCaller, session: Session, state: State
) -> ConsentOut:
    """Withdraw at once: later messages refused, undelivered ones dropped, payloads deleted,
    recipients notified."""
    row = await service.readable(session, consent_id, caller)
    if row.registered_by != caller.participant_id:
        raise Forbidden("Only the focal point that registered a consent withdraws it.")
    await service.withdraw(session, row, datetime.now(UTC))
    await session.commit()
    state.wake_retention()  # on SQLite it empties the write-ahead log of the purged payloads
    return service.out(row)

"""`/v1/consents`: register (the sending focal point), read (parties), withdraw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from trm_broker.api.auth import SignedCaller, defers_nonce, spend_after_refusal, spend_nonce
from trm_broker.api.consents import service
from trm_broker.api.consents.schemas import ConsentIn, ConsentOut
from trm_broker.api.deps import Session, State
from trm_broker.web.body import parse_json
from trm_broker.web.problems import Conflict, Forbidden, Problem
from trm_broker.web.query import ConsentId

router = APIRouter(prefix="/v1/consents", tags=["consent"])

_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConsentIn"}}},
    }
}


@router.post("", status_code=201, response_model=ConsentOut, openapi_extra=_BODY)
@defers_nonce
async def register_consent(caller: SignedCaller, session: Session, state: State) -> ConsentOut:
    """Register a consent record (signed request of the sending focal point), with the
    request's nonce, in one transaction."""
    turn = state.write_turn()

    async def spend() -> None:
        await turn.take()
        await spend_nonce(session, caller)

    try:
        new = parse_json(ConsentIn, caller.body)
        created = await service.register(
            session, new, caller, datetime.now(UTC), before_writes=spend
        )
        await session.commit()
    except IntegrityError as exc:  # the same id registered at the same moment
        await turn.take()
        await spend_after_refusal(session, caller)
        raise Conflict(
            "The consent could not be stored: one with its id was registered at the same "
            "time; a new consent needs a new id."
        ) from exc
    except Problem:
        await turn.take()
        await spend_after_refusal(session, caller)
        raise
    finally:
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            turn.release()
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

"""`/v1/participants`: the public registry, and its changes, each signed by an operator."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from trm_broker.api.auth import OperatorCaller
from trm_broker.api.deps import Session, State
from trm_broker.api.participants import service
from trm_broker.api.participants.schemas import (
    KeyRotationIn,
    ParticipantIn,
    ParticipantList,
    ParticipantOut,
)
from trm_broker.web.body import parse_json

router = APIRouter(prefix="/v1/participants", tags=["registry"])


def _json_body(model: type[Any]) -> dict[str, Any]:
    """Document a body the endpoint reads itself (after its signature is checked)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


_SIGNED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, stale or replayed request signature."}
}


@router.post(
    "",
    status_code=201,
    response_model=ParticipantOut,
    openapi_extra=_json_body(ParticipantIn),
    responses=_SIGNED,
)
async def register_participant(
    caller: OperatorCaller, session: Session, state: State
) -> ParticipantOut:
    """Register a participant with its public signing and encryption keys (operator only)."""
    new = parse_json(ParticipantIn, caller.body)
    created = await service.register(session, new, datetime.now(UTC), state.inbox_policy(), caller)
    await session.commit()
    return created


@router.post(
    "/{participant_id}/keys",
    status_code=201,
    response_model=ParticipantOut,
    openapi_extra=_json_body(KeyRotationIn),
    responses=_SIGNED,
)
async def add_key(participant_id: str, caller: OperatorCaller, session: Session) -> ParticipantOut:
    """Rotate: add a key; the current key of the same use stays valid for the overlap only."""
    new = parse_json(KeyRotationIn, caller.body)
    updated = await service.rotate_key(session, participant_id, new, datetime.now(UTC), caller)
    await session.commit()
    return updated


@router.post(
    "/{participant_id}/keys/{kid}/revoke", response_model=ParticipantOut, responses=_SIGNED
)
async def revoke_key(
    participant_id: str, kid: str, caller: OperatorCaller, session: Session
) -> ParticipantOut:
    """Revoke a key now (e.g. after a compromise): later signatures by it are refused."""
    updated = await service.revoke_key(session, participant_id, kid, datetime.now(UTC), caller)
    await session.commit()
    return updated


@router.get("", response_model=ParticipantList)
async def list_participants(session: Session) -> ParticipantList:
    """The registry, like a phone book of keys: every participant with its keys and the
    signed record of every change."""
    return ParticipantList(participants=await service.list_registry(session))

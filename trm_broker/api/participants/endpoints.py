"""`/v1/participants`: the public registry, and registration by the operator."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from trm_broker.api.deps import Operator, Session, State
from trm_broker.api.participants import service
from trm_broker.api.participants.schemas import (
    KeyRotationIn,
    ParticipantIn,
    ParticipantList,
    ParticipantOut,
)

router = APIRouter(prefix="/v1/participants", tags=["registry"])


@router.post("", status_code=201, response_model=ParticipantOut)
async def register_participant(
    body: ParticipantIn, session: Session, state: State, _: Operator
) -> ParticipantOut:
    """Register a participant with its public signing and encryption keys (operator only)."""
    created = await service.register(session, body, datetime.now(UTC), state.inbox_policy())
    await session.commit()
    return created


@router.post("/{participant_id}/keys", status_code=201, response_model=ParticipantOut)
async def add_key(
    participant_id: str, body: KeyRotationIn, session: Session, _: Operator
) -> ParticipantOut:
    """Rotate: add a key; the current key of the same use stays valid for the overlap only."""
    updated = await service.rotate_key(session, participant_id, body, datetime.now(UTC))
    await session.commit()
    return updated


@router.post("/{participant_id}/keys/{kid}/revoke", response_model=ParticipantOut)
async def revoke_key(
    participant_id: str, kid: str, session: Session, _: Operator
) -> ParticipantOut:
    """Revoke a key now (e.g. after a compromise): later signatures by it are refused."""
    updated = await service.revoke_key(session, participant_id, kid, datetime.now(UTC))
    await session.commit()
    return updated


@router.get("", response_model=ParticipantList)
async def list_participants(session: Session) -> ParticipantList:
    """The registry, like a phone book of keys: every participant with its keys."""
    return ParticipantList(participants=await service.list_registry(session))

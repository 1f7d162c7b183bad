"""Queries on the registry of participants and their public keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.domain.participants import KeyUse, ParticipantKind
from trm_broker.store.models import Participant, ParticipantKey


async def get(session: AsyncSession, participant_id: str) -> Participant | None:
    return await session.get(Participant, participant_id)


async def list_all(session: AsyncSession) -> Sequence[Participant]:
    return (await session.scalars(select(Participant).order_by(Participant.id))).all()


async def any_of_kind(session: AsyncSession, kind: ParticipantKind) -> bool:
    query = select(Participant.id).where(Participant.kind == kind).limit(1)
    return (await session.scalars(query)).first() is not None


async def countries_of(session: AsyncSession, participant_ids: set[str]) -> dict[str, str]:
    if not participant_ids:
        return {}
    query = select(Participant.id, Participant.country).where(Participant.id.in_(participant_ids))
    return {pid: country for pid, country in (await session.execute(query)).all()}


async def keys_of(
    session: AsyncSession, participant_ids: Sequence[str]
) -> Sequence[ParticipantKey]:
    query = (
        select(ParticipantKey)
        .where(ParticipantKey.participant_id.in_(participant_ids))
        .order_by(ParticipantKey.participant_id, ParticipantKey.use, ParticipantKey.valid_from)
    )
    return (await session.scalars(query)).all()


async def key(session: AsyncSession, kid: str) -> ParticipantKey | None:
    return await session.get(ParticipantKey, kid)


async def usable_key(
    session: AsyncSession, participant_id: str, use: KeyUse, now: datetime
) -> ParticipantKey | None:
    """The participant's current key for ``use``: valid now, not revoked, newest first."""
    query = (
        select(ParticipantKey)
        .where(
            ParticipantKey.participant_id == participant_id,
            ParticipantKey.use == use,
            ParticipantKey.revoked_at.is_(None),
            ParticipantKey.valid_from <= now,
            or_(ParticipantKey.valid_until.is_(None), ParticipantKey.valid_until > now),
        )
        .order_by(ParticipantKey.valid_from.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def usable_keys(
    session: AsyncSession, participant_id: str, use: KeyUse, now: datetime
) -> Sequence[ParticipantKey]:
    query = select(ParticipantKey).where(
        ParticipantKey.participant_id == participant_id,
        ParticipantKey.use == use,
        ParticipantKey.revoked_at.is_(None),
        ParticipantKey.valid_from <= now,
        or_(ParticipantKey.valid_until.is_(None), ParticipantKey.valid_until > now),
    )
    return (await session.scalars(query)).all()


def add(session: AsyncSession, participant: Participant, keys: Sequence[ParticipantKey]) -> None:
    session.add(participant)
    session.add_all(keys)


def is_usable(key: ParticipantKey, now: datetime) -> bool:
    """Whether a key may be used at ``now``: not revoked, inside its validity."""
    if key.revoked_at is not None or key.valid_from > now:
        return False
    return key.valid_until is None or key.valid_until > now

"""The signed record of every registry change (docs/design.md §4, §9)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.store.models import RegistryChange


def add(session: AsyncSession, change: RegistryChange) -> None:
    session.add(change)


async def of_participants(
    session: AsyncSession, participant_ids: Sequence[str]
) -> Sequence[RegistryChange]:
    query = (
        select(RegistryChange)
        .where(RegistryChange.participant_id.in_(participant_ids))
        .order_by(RegistryChange.recorded_at, RegistryChange.id)
    )
    return (await session.scalars(query)).all()

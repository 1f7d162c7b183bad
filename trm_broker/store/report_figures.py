"""The auditors' report's message figures, from the per-day counters database triggers keep
(``message_days``, ``case_referrals``, migration 0009) instead of every message of the
period: a report of 30 days adds up a few thousand rows whatever the traffic.

A period need not start or end at midnight (``GET /v1/audit/report`` takes any times): its
whole UTC days come from the counters, the part-days at either end from the messages
themselves, so the figures are exactly those of the messages accepted in the period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, cast, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from trm_broker.store.days import utc_day
from trm_broker.store.models import CaseReferral, Message, MessageDay, Participant


@dataclass(frozen=True)
class Period:
    """[since, until) as its whole UTC days [first_day, end_day) and the part-days left."""

    days: tuple[date, date] | None
    parts: tuple[tuple[datetime, datetime], ...]

    @classmethod
    def of(cls, since: datetime, until: datetime) -> Period:
        since, until = since.astimezone(UTC), until.astimezone(UTC)
        first = datetime.combine(since.date(), time(), UTC)
        if first < since:
            first += timedelta(days=1)
        end = datetime.combine(until.date(), time(), UTC)
        if first >= end:
            return cls(None, ((since, until),) if since < until else ())
        parts = []
        if since < first:
            parts.append((since, first))
        if end < until:
            parts.append((end, until))
        return cls((first.date(), end.date()), tuple(parts))


def _counted(period: Period) -> Select[str, Any, str, str, int] | None:
    """Rows (day, type, sender id, recipient id, count) that add up to the period's
    messages: the counters' whole days, and the part-days counted from the messages."""
    parts: list[Select[str, Any, str, str, int]] = []
    if period.days is not None:
        first, end = period.days
        parts.append(
            select(
                MessageDay.day.label("day"),
                MessageDay.type.label("type"),
                MessageDay.sender_id.label("sender_id"),
                MessageDay.recipient_id.label("recipient_id"),
                cast(MessageDay.count, BigInteger).label("n"),
            ).where(MessageDay.day >= first.isoformat(), MessageDay.day < end.isoformat())
        )
    for start, stop in period.parts:
        day = utc_day(Message.accepted_at)
        parts.append(
            select(
                day.label("day"),
                Message.type.label("type"),
                Message.sender_id.label("sender_id"),
                Message.recipient_id.label("recipient_id"),
                cast(func.count(), BigInteger).label("n"),
            )
            .where(Message.accepted_at >= start, Message.accepted_at < stop)
            .group_by(day, Message.type, Message.sender_id, Message.recipient_id)
        )
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else select(union_all(*parts).subquery())


async def by_type_and_pair(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[tuple[str, str, str, int]]:
    """(type, sender's country, recipient's country, count) of the messages accepted in
    [since, until), ordered so."""
    counted = _counted(Period.of(since, until))
    if counted is None:
        return []
    rows = counted.subquery()
    sender, recipient = aliased(Participant), aliased(Participant)
    total = cast(func.sum(rows.c.n), BigInteger)
    query = (
        select(rows.c.type, sender.country, recipient.country, total)
        .join(sender, sender.id == rows.c.sender_id)
        .join(recipient, recipient.id == rows.c.recipient_id)
        .group_by(rows.c.type, sender.country, recipient.country)
        .order_by(rows.c.type, sender.country, recipient.country)
    )
    return [(t, o, d, int(n)) for t, o, d, n in (await session.execute(query)).all()]


async def by_day_and_type(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[tuple[str, str, int]]:
    """(UTC day as YYYY-MM-DD, type, count) of the messages accepted in [since, until)."""
    counted = _counted(Period.of(since, until))
    if counted is None:
        return []
    rows = counted.subquery()
    query = select(rows.c.day, rows.c.type, cast(func.sum(rows.c.n), BigInteger)).group_by(
        rows.c.day, rows.c.type
    )
    return [(d, t, int(n)) for d, t, n in (await session.execute(query)).all()]


@dataclass(frozen=True)
class ReferralTime:
    case_ref: str
    referred_at: datetime
    received_at: datetime
    from_country: str
    to_country: str


async def referral_times(
    session: AsyncSession, since: datetime, until: datetime
) -> Sequence[ReferralTime]:
    """Each case first referred in [since, until) and confirmed received since (whenever):
    its first referral's and first confirmation's times, and its first referral's countries."""
    sender, recipient = aliased(Participant), aliased(Participant)
    query = (
        select(
            CaseReferral.case_ref,
            CaseReferral.referred_at,
            CaseReferral.received_at,
            sender.country,
            recipient.country,
        )
        .join(sender, sender.id == CaseReferral.sender_id)
        .join(recipient, recipient.id == CaseReferral.recipient_id)
        .where(
            CaseReferral.referred_at >= since,
            CaseReferral.referred_at < until,
            CaseReferral.received_at.is_not(None),
        )
    )
    return [
        ReferralTime(case_ref, referred, received, origin, destination)
        for case_ref, referred, received, origin, destination in (
            await session.execute(query)
        ).all()
        if referred is not None and received is not None
    ]

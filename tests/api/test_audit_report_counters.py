"""The auditors' report reads per-day counters the database keeps (migration 0009) instead of
every message of its period (issue 20): its figures stay exactly those counted from the
messages themselves, for periods on and off midnight, with ties, late confirmations and a
participant whose country changed, on both backends. The reference below is the report's
message figures as computed before the counters, straight from ``messages``."""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from trm_broker.api.audit import service
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import MessageType
from trm_broker.domain.participants import ParticipantKind
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.days import utc_day
from trm_broker.store.migrate import upgrade_async
from trm_broker.store.models import LedgerDay, LedgerEntry, Message, Participant

START = datetime(2026, 11, 2, tzinfo=UTC)
PEOPLE = {"at.fp": "AT", "ng.fp": "NG", "fr.fp": "FR", "de.fp": "DE"}
TYPES = [MessageType.REFERRAL, MessageType.RECEPTION_CONFIRMATION, MessageType.CASE_MONITORING]


async def _reference(session: AsyncSession, since: datetime, until: datetime, k: int) -> Any:
    """The message figures of the report as the broker computed them before migration 0009."""
    sender, recipient = aliased(Participant), aliased(Participant)
    in_range = (Message.accepted_at >= since, Message.accepted_at < until)
    by_pair = await session.execute(
        select(Message.type, sender.country, recipient.country, func.count())
        .join(sender, sender.id == Message.sender_id)
        .join(recipient, recipient.id == Message.recipient_id)
        .where(*in_range)
        .group_by(Message.type, sender.country, recipient.country)
        .order_by(Message.type, sender.country, recipient.country)
    )
    messages = [
        {"type": t, "from_country": o, "to_country": d, "count": n if n >= k else None}
        for t, o, d, n in by_pair.all()
    ]
    referred_in_range = select(Message.case_ref).where(Message.type == "referral", *in_range)
    firsts = await session.execute(
        select(Message.case_ref, Message.type, func.min(Message.accepted_at))
        .where(
            Message.type.in_(["referral", "reception_confirmation"]),
            Message.case_ref.in_(referred_in_range),
        )
        .group_by(Message.case_ref, Message.type)
    )
    referred: dict[str, datetime] = {}
    received: dict[str, datetime] = {}
    for case_ref, type_, at in firsts.all():
        (referred if type_ == "referral" else received)[case_ref] = at
    in_period = [c for c in referred if c in received and since <= referred[c] < until]
    pairs = await session.execute(
        select(Message.case_ref, sender.country, recipient.country)
        .join(sender, sender.id == Message.sender_id)
        .join(recipient, recipient.id == Message.recipient_id)
        .where(Message.type == "referral", *in_range)
        .order_by(Message.accepted_at, Message.id)
    )
    pair_of: dict[str, tuple[str, str]] = {}
    for case_ref, origin, destination in pairs.all():
        pair_of.setdefault(case_ref, (origin, destination))
    hours: dict[tuple[str, str], list[float]] = defaultdict(list)
    for c in in_period:
        hours[pair_of[c]].append((received[c] - referred[c]).total_seconds() / 3600)
    durations = sorted(h for values in hours.values() for h in values)
    weekly: Counter[tuple[date, str]] = Counter()
    day = utc_day(Message.accepted_at)
    by_day = await session.execute(
        select(day, Message.type, func.count()).where(*in_range).group_by(day, Message.type)
    )
    for text, type_, n in by_day.all():
        weekly[(service.week_of(date.fromisoformat(text)), str(type_))] += n
    return {
        "messages": messages,
        "cases": len(durations),
        "median": statistics.median(durations) if durations else None,
        "by_pair": {pair: sorted(values) for pair, values in sorted(hours.items())},
        "weekly": sorted(weekly.items()),
    }


def _message_figures(report: dict[str, Any]) -> Any:
    return [
        {key: row[key] for key in ("type", "from_country", "to_country", "count")}
        for row in report["messages"]
    ]


async def _messages(session: AsyncSession, seed: int, count: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    session.add_all(
        Participant(id=pid, kind=ParticipantKind.FOCAL_POINT, country=c, created_at=START)
        for pid, c in PEOPLE.items()
    )
    await session.flush()
    moments = [START + timedelta(hours=rng.uniform(0, 24 * 20)) for _ in range(count)]
    rows: list[tuple[datetime, str, MessageType, str, str]] = []
    for i in range(count):
        # Odd ones share a time with the one before: ties in acceptance time, in one case
        # too (two first referrals at once: the lower id is the first, its pair counts).
        moment = moments[i - i % 2]
        case = f"AT-2026-{rng.randrange(count // 4):04d}" if i % 4 != 1 else rows[-1][1]
        sender, recipient = rng.sample(sorted(PEOPLE), 2)
        rows.append((moment, case, rng.choice(TYPES), sender, recipient))
    for i, (at, case, type_, sender, recipient) in enumerate(rows):
        session.add(
            Message(
                id=f"m-{rng.randrange(10**9):09d}-{i:05d}",
                type=type_,
                case_ref=case,
                sender_id=sender,
                recipient_id=recipient,
                sender_kid="kid",
                created_at=at,
                accepted_at=at,
                envelope_digest="sha-256:x",
                receipt="r",
            )
        )
        if i % 50 == 0:
            await session.commit()  # in several transactions, as the broker accepts them
    await session.commit()


def _periods(seed: int) -> list[tuple[datetime, datetime]]:
    rng = random.Random(seed)  # noqa: S311 - test data, not cryptography
    periods = [
        (START, START + timedelta(days=20)),  # whole days only
        (START + timedelta(days=3), START + timedelta(days=4)),  # one day
        (START + timedelta(hours=5), START + timedelta(hours=7)),  # within a day
        (START - timedelta(days=2), START + timedelta(days=30)),  # beyond the messages
    ]
    for _ in range(12):  # off midnight at either end, or both
        since = START + timedelta(minutes=rng.randrange(-600, 20 * 24 * 60))
        periods.append((since, since + timedelta(minutes=rng.randrange(1, 12 * 24 * 60))))
    return periods


async def _compare(session: AsyncSession, seed: int) -> None:
    for since, until in _periods(seed):
        for k in (1, 3):
            report = await service.report(session, since, until, k)
            expected = await _reference(session, since, until, k)
            assert _message_figures(report) == expected["messages"], (since, until)
            timing = report["referral_to_reception"]
            assert timing["cases"] == (expected["cases"] if expected["cases"] >= k else None)
            if expected["cases"] >= k:
                assert timing["median_hours"] == round(expected["median"], 1)
            by_pair = {
                (r["from_country"], r["to_country"]): r
                for r in report["referral_to_reception_by_pair"]
            }
            assert list(by_pair) == list(expected["by_pair"]), (since, until)
            for pair, hours in expected["by_pair"].items():
                assert by_pair[pair] == {
                    "from_country": pair[0],
                    "to_country": pair[1],
                    **service._timing(hours, k),
                }
            weekly = [
                ((date.fromisoformat(r["week"]), r["type"]), r["count"])
                for r in report["messages_per_week"]
            ]
            assert weekly == [(key, n if n >= k else None) for key, n in expected["weekly"]]


async def test_the_reports_message_figures_are_those_of_the_messages(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await _messages(session, seed=20, count=600)
            await _compare(session, seed=20)
            # A participant moves: the report counts by the countries as they are now.
            await session.execute(
                update(Participant).where(Participant.id == "fr.fp").values(country="IT")
            )
            await session.commit()
            await _compare(session, seed=21)
    finally:
        await engine.dispose()


async def test_an_upgraded_database_counts_the_messages_it_had_and_those_after(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Migration 0009 fills the counters from the messages and entries already there (the
    triggers count those after): the report and the days' index bounds are then exact."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'populated.db'}"
    else:
        url = request.getfixturevalue("empty_postgres_database")
    await upgrade_async(url, "0008")
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            await _messages(session, seed=22, count=400)
            session.add_all(
                LedgerEntry(
                    idx=i,
                    body=b"{}",
                    type=EventType.ALERT_RAISED,
                    at=START + timedelta(hours=(i * 7) % 100),
                )
                for i in range(60)
            )
            await session.commit()
        await upgrade_async(url)
        async with session_factory(engine)() as session:
            await _compare(session, seed=22)
            session.add_all(
                Message(
                    id=f"after-{i}",
                    type=MessageType.REFERRAL if i % 2 else MessageType.RECEPTION_CONFIRMATION,
                    case_ref=f"AT-2026-{i:04d}",
                    sender_id="at.fp",
                    recipient_id="ng.fp",
                    sender_kid="kid",
                    created_at=START + timedelta(days=2, hours=i),
                    accepted_at=START + timedelta(days=2, hours=i),
                    envelope_digest="sha-256:x",
                    receipt="r",
                )
                for i in range(40)
            )
            await session.commit()
            await _compare(session, seed=23)
            entries = (await session.scalars(select(LedgerEntry))).all()
            days = {
                d.day: (d.first_idx, d.last_idx) for d in await session.scalars(select(LedgerDay))
            }
    finally:
        await engine.dispose()
    by_day: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        assert e.idx is not None
        by_day[e.at.date().isoformat()].append(e.idx)
    assert days == {day: (min(found), max(found)) for day, found in by_day.items()}

"""Several broker processes on one PostgreSQL database (replicas, or `TRM_WORKERS`): the
jobs that must run once, purging payloads and raising alerts, are taken by one process at a
time, so no payload is purged twice into the ledger and no alert is raised twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.api.test_case_transfer import AT, NG, SHELTER, iso, referred_and_accepted, send
from tests.support import Broker, broker_settings, referral, running_broker
from trm_broker.background.alert_scheduler import AlertScheduler
from trm_broker.background.retention import RetentionPurger
from trm_broker.domain.ledger_events import EventType
from trm_broker.domain.messages import MessageType as T
from trm_broker.store import turns
from trm_broker.store.database import create_engine, session_factory
from trm_broker.store.models import AlertRecord, Delivery, LedgerEntry, Message

DAY = timedelta(days=1)


@asynccontextmanager
async def another_process(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a pool of their own, as another broker process would have."""
    engine = create_engine(url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def holding(
    sessions: async_sessionmaker[AsyncSession], job: turns.Job
) -> AsyncIterator[None]:
    async with sessions() as session:
        assert await turns.try_turn(session, job)
        yield
        await session.rollback()


async def count(sessions: async_sessionmaker[AsyncSession], query: object) -> int:
    async with sessions() as session:
        return int(await session.scalar(query) or 0)  # type: ignore[call-overload]


async def test_payloads_are_purged_once_by_one_replica(
    postgres_database: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(postgres_database, tmp_path)) as broker:
        await broker.register(AT, "AT", inbox_url="https://node-at.example/inbox")
        await broker.register(NG, "NG", inbox_url="https://node-ng.example/inbox")
        ids = [(await broker.submit(referral(AT, NG))).json()["message_id"] for _ in range(6)]
        now = datetime.now(UTC)
        sessions = broker.app.state.broker.sessions
        async with sessions() as session:
            await session.execute(
                update(Delivery)
                .where(Delivery.message_id.in_(ids))
                .values(status="acknowledged", acknowledged_at=now - 31 * DAY)
            )
            await session.commit()
        purged_entries = select(func.count()).where(LedgerEntry.type == EventType.PAYLOAD_PURGED)
        async with another_process(postgres_database) as other:
            # While another replica purges, this one skips its round.
            async with holding(other, turns.Job.RETENTION):
                assert await RetentionPurger(sessions, 30 * DAY).run_once(now) == 0
            assert await count(sessions, purged_entries) == 0
            # Two replicas at once: each payload purged, and recorded, exactly once.
            done = await asyncio.gather(
                *(
                    RetentionPurger(s, 30 * DAY, batch_size=2).run_once(now)
                    for s in (sessions, other, sessions, other)
                )
            )
            while sum(done) < len(ids) and any(done):
                done.append(await RetentionPurger(other, 30 * DAY).run_once(now))
        assert sum(done) == len(ids)
        assert await count(sessions, purged_entries) == len(ids)
        assert await count(sessions, select(func.count()).where(Message.purged_at.is_(None))) == 0


async def test_an_overdue_reception_is_raised_once_by_one_replica(
    postgres_database: str, tmp_path: Path
) -> None:
    async with running_broker(broker_settings(postgres_database, tmp_path)) as broker:
        case, now = "AT-2026-0905", datetime.now(UTC)
        await _return_prepared(broker, case, now, arrival=now + timedelta(days=4))
        state = broker.app.state.broker
        late = now + timedelta(days=4, hours=49)
        async with another_process(postgres_database) as other:
            async with holding(other, turns.Job.ALERTS):
                assert await AlertScheduler(state.sessions, state.rules()).run_once(late) == (0, 0)
            results = await asyncio.gather(
                *(AlertScheduler(s, state.rules()).run_once(late) for s in (state.sessions, other))
            )
        assert sorted(results) == [(0, 0), (1, 0)]
        alerts = select(func.count()).select_from(AlertRecord).where(AlertRecord.case_ref == case)
        raised = select(func.count()).where(
            LedgerEntry.type == EventType.ALERT_RAISED, LedgerEntry.case_ref == case
        )
        assert await count(state.sessions, alerts) == 1
        assert await count(state.sessions, raised) == 1


async def _return_prepared(broker: Broker, case: str, now: datetime, arrival: datetime) -> None:
    for keyset, country, kind in [
        (AT, "AT", "focal_point"),
        (NG, "NG", "focal_point"),
        (SHELTER, "NG", "receiving_org"),
    ]:
        inbox = f"https://{keyset.participant}.example/inbox"
        assert (await broker.register(keyset, country, kind=kind, inbox_url=inbox)).is_success
    await referred_and_accepted(broker, case)
    assessment = {"risk_level": "low", "return_recommended": True, "assessed_at": iso(now)}
    assessed = send(NG, AT, T.RISK_ASSESSMENT, assessment, case)
    assert (await broker.submit(assessed)).status_code == 202
    await broker.acknowledge(assessed)
    preparation = {"receiving_org": SHELTER.participant, "planned_arrival": iso(arrival)}
    prepared = await broker.submit(send(AT, NG, T.RETURN_PREPARATION, preparation, case))
    assert prepared.status_code == 202, prepared.text

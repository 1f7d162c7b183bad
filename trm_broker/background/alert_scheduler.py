"""Raises and closes the workflow's alerts (DESIGN.md §6): a reception confirmation overdue
after the planned arrival plus grace, a monitoring report overdue. Each change is a ledger
entry; the parties see open alerts at `GET /v1/alerts`."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.background.loop import BackgroundLoop
from trm_broker.domain import workflow
from trm_broker.domain.ids import uuid7
from trm_broker.domain.ledger_events import EventType, LedgerEvent
from trm_broker.store import cases, ledger
from trm_broker.store.models import AlertRecord

log = structlog.get_logger("trm_broker.alerts")

#: The alerts this scheduler owns; consent_withdrawn notices are closed by their readers.
_WORKFLOW_ALERTS = {kind.value for kind in workflow.AlertKind}
_WATCHED = [workflow.Stage.RETURN_PREPARED.value, workflow.Stage.RECEIVED.value]


class AlertScheduler(BackgroundLoop):
    name = "alerts"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules: workflow.Rules,
        *,
        interval: float = 60.0,
    ) -> None:
        super().__init__(interval)
        self._sessions = sessions
        self._rules = rules

    async def step(self) -> bool:
        await self.run_once(datetime.now(UTC))
        return False

    async def run_once(self, now: datetime) -> tuple[int, int]:
        """Raise the alerts now due and close those resolved; return (raised, closed)."""
        raised = closed = 0
        async with self._sessions() as session:
            open_alerts: dict[tuple[str, str], AlertRecord] = {
                (a.case_ref, a.kind): a
                for a in await cases.open_alerts(session)
                if a.kind in _WORKFLOW_ALERTS
            }
            watched = {row.case_ref: row for row in await cases.active(session, _WATCHED)}
            for case_ref in {ref for ref, _ in open_alerts}:
                if case_ref not in watched:
                    row = await cases.get(session, case_ref)
                    if row is not None:
                        watched[case_ref] = row
            for row in watched.values():
                due = {k.value for k in workflow.due_alerts(cases.state_of(row), now, self._rules)}
                parties = sorted(cases.parties(row))
                for kind in due - {k for ref, k in open_alerts if ref == row.case_ref}:
                    cases.add_alert(
                        session,
                        AlertRecord(
                            id=str(uuid7()),
                            case_ref=row.case_ref,
                            kind=kind,
                            party1=row.sending,
                            party2=row.destination,
                            party3=row.receiving_org,
                            raised_at=now,
                        ),
                    )
                    self._record(session, EventType.ALERT_RAISED, row.case_ref, kind, parties, now)
                    raised += 1
                for (ref, kind), alert in open_alerts.items():
                    if ref == row.case_ref and kind not in due:
                        alert.closed_at = now
                        self._record(session, EventType.ALERT_CLOSED, ref, kind, parties, now)
                        closed += 1
            await session.commit()
        if raised or closed:
            log.info("alerts_updated", raised=raised, closed=closed)
        return raised, closed

    @staticmethod
    def _record(
        session: AsyncSession,
        event: EventType,
        case_ref: str,
        kind: str,
        parties: list[str],
        now: datetime,
    ) -> None:
        ledger.append(
            session,
            LedgerEvent(
                event, now, parties=tuple(parties), case_ref=case_ref, facts={"alert": kind}
            ),
        )

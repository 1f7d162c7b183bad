"""Raises and closes the workflow's alerts (docs/design.md §6): a reception confirmation overdue
after the planned arrival plus grace, a monitoring report overdue. Each change is a ledger
entry; the parties see open alerts at `GET /v1/alerts`."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from trm_broker.background.loop import BackgroundLoop
from trm_broker.domain import workflow
from trm_broker.domain.alerts import WORKFLOW_ALERTS, AlertKind
from trm_broker.store import alerts, cases, turns
from trm_broker.store.models import AlertRecord

log = structlog.get_logger("trm_broker.alerts")

#: The alerts this scheduler owns are ``WORKFLOW_ALERTS``; the others are closed by what
#: resolves them (a dead letter answered) or stay as notices (a consent withdrawn).
_WATCHED = [workflow.Stage.RETURN_PREPARED, workflow.Stage.RECEIVED]


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
            if not await turns.try_turn(session, turns.Job.ALERTS):
                return 0, 0  # another replica checks them now
            open_alerts: dict[tuple[str, AlertKind], AlertRecord] = {
                (a.case_ref, a.kind): a
                for a in await cases.open_alerts(session)
                if a.kind in WORKFLOW_ALERTS
            }
            watched = {row.case_ref: row for row in await cases.active(session, _WATCHED)}
            for case_ref in {ref for ref, _ in open_alerts}:
                if case_ref not in watched:
                    row = await cases.get(session, case_ref)
                    if row is not None:
                        watched[case_ref] = row
            for row in watched.values():
                due = workflow.due_alerts(cases.state_of(row), now, self._rules)
                parties = [p for p in (row.sending, row.destination, row.receiving_org) if p]
                for kind in sorted(due - {k for ref, k in open_alerts if ref == row.case_ref}):
                    alerts.raise_alert(session, kind, row.case_ref, parties, now)
                    raised += 1
                for (ref, kind), alert in open_alerts.items():
                    if ref == row.case_ref and kind not in due:
                        alerts.close_alert(session, alert, now)
                        closed += 1
            await session.commit()
        if raised or closed:
            log.info("alerts_updated", raised=raised, closed=closed)
        return raised, closed

"""What the dashboard shows: the caller's organisation's cases, each with what it may send
next and what is overdue, read through the JSON API's own case view (node/case_view.py),
and the cases opened here whose referral is not sent yet (web/opening.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from trm_broker.node import consent_forms, sent_api, store
from trm_broker.node.access import Principal
from trm_broker.node.broker_client import BrokerError
from trm_broker.node.sent_api import NodeParts
from trm_broker.node.sent_schemas import CaseViewOut
from trm_broker.node.web.opening import case_here
from trm_broker.node.web.returns import Return, return_of
from trm_broker.web.problems import Problem

#: Cases shown on the dashboard, the most recently active first (each is one signed read
#: at the broker); older ones are opened by their reference. A case with an open alert (an
#: overdue reception or report, a withdrawal, a dead letter) is shown however old, up to
#: ALERTED more.
SHOWN = 25
ALERTED = 50
_SCANNED = 1000


@dataclass
class CaseSummary:
    case_ref: str
    last_activity: datetime
    stage: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    deadlines: list[dict[str, Any]] = field(default_factory=list)
    alerts: int = 0
    #: The broker could not be asked: only the node's own part is known.
    unavailable: bool = False
    #: The return the organisation was designated for in this case, if it was.
    designated: Return | None = None

    @property
    def overdue(self) -> bool:
        return any(d.get("overdue") for d in self.deadlines) or self.alerts > 0


def steps_of(view: CaseViewOut) -> list[dict[str, Any]]:
    """The next steps the broker states for the reader's organisation (allowed and not)."""
    parties = view.next_steps if isinstance(view.next_steps, list) else []
    return [
        step
        for party in parties
        if isinstance(party, dict) and party.get("participant") == view.reader
        for step in party.get("steps", [])
        if isinstance(step, dict)
    ]


def deadlines_of(view: CaseViewOut) -> list[dict[str, Any]]:
    return [d for d in view.deadlines or [] if isinstance(d, dict)]


async def caseload(state: NodeParts, db: AsyncSession, principal: Principal) -> list[CaseSummary]:
    """The organisation's cases: overdue first, then those with a step to take, newest first."""
    mine = principal.participants(state.keys)
    latest: dict[str, datetime] = {}
    for received in await store.list_received(db, _SCANNED, None, mine):
        latest[received.case_ref] = max(
            latest.get(received.case_ref, received.received_at), received.received_at
        )
    for sent in await sent_api.listed(
        db, mine, case_ref=None, status=None, after=None, limit=_SCANNED
    ):
        latest[sent.case_ref] = max(latest.get(sent.case_ref, sent.queued_at), sent.queued_at)
    for opened in await consent_forms.registered(db, mine):  # a new case: its consent first
        at = opened.registered_at or opened.uploaded_at
        latest[opened.case_ref] = max(latest.get(opened.case_ref, at), at)
    recent = sorted(latest, key=lambda ref: latest[ref], reverse=True)[:SHOWN]
    alerted = await _alerted(state, principal)
    older = sorted(set(alerted) - set(recent), key=lambda ref: alerted[ref], reverse=True)
    shown = recent + older[:ALERTED]
    for case_ref in older[:ALERTED]:
        latest.setdefault(case_ref, alerted[case_ref])
    summaries = []
    for case_ref in shown:
        summary = CaseSummary(case_ref, latest[case_ref])
        try:
            view = await case_here(case_ref, state, db, principal)
        except Problem:
            summary.unavailable = True
        else:
            summary.stage = view.stage
            summary.steps = [s for s in steps_of(view) if s.get("allowed")]
            summary.deadlines = deadlines_of(view)
            summary.alerts = len(view.alerts)
            summary.unavailable = view.broker is None
            summary.designated = return_of(
                view, steps_of(view), summary.deadlines, datetime.now(UTC)
            )
        summaries.append(summary)
    summaries.sort(key=lambda c: (not c.overdue, not c.steps, -c.last_activity.timestamp()))
    return summaries


async def _alerted(state: NodeParts, principal: Principal) -> dict[str, datetime]:
    """The organisation's cases with an open alert at the broker, each with its latest
    alert's time: one signed read per organisation; none while the broker cannot be asked
    (each case then says so)."""
    keys = principal.keyring(state.keys)
    found: dict[str, datetime] = {}
    for who in principal.participants(state.keys):
        try:
            alerts = await state.broker.open_alerts(keys.current[who].signing)
        except BrokerError:
            continue
        for alert in alerts:
            case_ref = alert.get("case_ref")
            if not isinstance(case_ref, str) or alert.get("closed_at") is not None:
                continue
            raised = _moment(alert.get("raised_at"))
            found[case_ref] = max(found.get(case_ref, raised), raised)
    return found


def _moment(value: object) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def designated(cases: list[CaseSummary]) -> list[Return]:
    """The returns among the cases: late first, then by planned arrival."""
    found = [c.designated for c in cases if c.designated is not None]
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda r: (not r.late, r.planned_arrival or far))

"""The console's case timeline (issue 20): one case transfer's messages in order, with who
sent them, when they were accepted, delivered and answered, and the steps later than the
workflow's deadlines marked; then the ledger's entries of the case, each checked by the
page as on the ledger page. Metadata only. The messages' table downloads as CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

from babel.dates import format_timedelta
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trm_broker.api.console import timeline
from trm_broker.api.console.ledger_pages import (
    CASE_REF,
    Filters,
    render,
    shown_entries,
    signed_head,
    vkeys,
)
from trm_broker.api.console.visitor import PREFIX, LedgerReader, clock
from trm_broker.api.deps import BrokerState, State
from trm_broker.store import cases
from trm_broker.store import ledger as store
from trm_broker.web.page_app import PageRefused

router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: Ledger entries shown of one case: a case transfer has a few dozen at most.
CASE_STEPS = 500
CSV_HEADER = [
    "message_id",
    "type",
    "sender",
    "recipient",
    "accepted_at",
    "delivered_at",
    "delivery_status",
    "answered_at",
    "seconds_since_step_before",
    "seconds_since_referral",
    "deadline",
    "due_at",
    "late",
]


async def _steps(state: BrokerState, case_ref: str) -> tuple[list[timeline.TimelineStep], Any]:
    async with state.sessions() as db:
        row = await cases.get(db, case_ref)
        messages = await cases.timeline_of(db, case_ref)
    case = cases.state_of(row) if row is not None else None
    return timeline.steps(messages, case, state.rules()), case


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _seconds(span: timedelta | None) -> str:
    return f"{span.total_seconds():.0f}" if span is not None else ""


@router.get("/cases/{case_ref}.csv")
async def case_csv(case_ref: str, visitor: LedgerReader, state: State) -> Response:
    """The timeline's table of messages as CSV."""
    if not CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    steps, _ = await _steps(state, case_ref)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for s in steps:
        writer.writerow(
            [
                s.message_id,
                s.type,
                s.sender,
                s.recipient,
                _iso(s.accepted_at),
                _iso(s.delivered_at),
                s.delivery_status,
                _iso(s.answered_at),
                _seconds(s.since_before),
                _seconds(s.since_referral),
                s.deadline or "",
                _iso(s.due_at),
                "true" if s.late else ("false" if s.deadline else ""),
            ]
        )
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="trm-case-{case_ref}.csv"'},
    )


@router.get("/cases/{case_ref}", response_class=HTMLResponse)
async def case_page(
    case_ref: str, request: Request, visitor: LedgerReader, state: State
) -> HTMLResponse:
    """The case's messages against its deadlines, then its ledger entries with their proofs."""
    if not CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    steps, case = await _steps(state, case_ref)
    now = clock(request)
    async with state.sessions() as db:
        latest = await store.latest_checkpoint(db)
        shown: list[dict[str, Any]] = []
        more = None
        if latest is not None and latest.size > 0:
            filters = Filters(case_ref=case_ref)
            shown, more = await shown_entries(db, filters, -1, latest.size, CASE_STEPS)

    def span(value: timedelta | None) -> str:
        return format_timedelta(value, locale=visitor.language) if value is not None else ""

    before: datetime | None = None
    for entry in shown:
        at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))
        entry["gap"] = span(at - before) if before else ""
        before = at
    return render(
        request,
        visitor,
        "case.html",
        case_ref=case_ref,
        steps=steps,
        span=span,
        waiting=timeline.waiting(case, now, state.rules()),
        stage=case.stage.value if case is not None else None,
        entries=shown,
        timeline=True,
        truncated=more is not None,
        checkpoint=signed_head(state, latest) if latest is not None else None,
        vkeys=vkeys(state),
    )

"""The console's overview (issue 20): the auditors' report for a period of days, as the API's
``GET /v1/audit/report`` computes it (the very same function, so the figures are equal),
with small cells suppressed exactly as there, and the latest checkpoint's age.

Shown as tables (accessible as they are), the main ones also as charts drawn by the server
(inline SVG), each table as CSV, and the whole report as the API's CSV.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from babel.dates import format_timedelta
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from trm_broker.api.audit import service as audit
from trm_broker.api.console import figures
from trm_broker.api.console.ledger_pages import render, signed_head
from trm_broker.api.console.visitor import PREFIX, LedgerReader, clock
from trm_broker.api.deps import BrokerState, State
from trm_broker.store import ledger as store
from trm_broker.web.page_app import PageRefused

router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: The period shown unless one is asked for: the last 30 days, today included.
DEFAULT_DAYS = 30


def _day(text: str | None) -> date | None:
    if not text or len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def period(request: Request, state: BrokerState) -> tuple[date, date, str | None]:
    """The first and last day asked for (UTC), or the default; and what was wrong, if any."""
    today = clock(request).date()
    first = _day(request.query_params.get("from"))
    last = _day(request.query_params.get("to"))
    problem = None
    if ("from" in request.query_params and first is None) or (
        "to" in request.query_params and last is None
    ):
        problem = "days"
    last = last or today
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    longest = state.settings.report_max_days
    if first > last or (last - first).days + 1 > longest:
        problem = "period"
        first, last = today - timedelta(days=DEFAULT_DAYS - 1), today
    return first, last, problem


def bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first day 00:00, the day after the last 00:00) in UTC: the report's [from, to)."""
    return datetime.combine(first, time(), UTC), datetime.combine(last, time(), UTC) + timedelta(
        days=1
    )


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(request: Request, visitor: LedgerReader, state: State) -> HTMLResponse:
    first, last, problem = period(request, state)
    since, until = bounds(first, last)
    async with state.sessions() as db:
        report = await audit.report(db, since, until, state.settings.report_min_cell)
        latest = await store.latest_checkpoint(db)
    age = None
    if latest is not None:
        age = format_timedelta(clock(request) - latest.issued_at, locale=visitor.language)
    weekly, types, weeks = figures.weekly_chart(report)
    context: dict[str, Any] = {
        "report": report,
        "weekly": weekly,
        "types": types,
        "weeks": weeks,
        "charts": figures.charts(report),
        "tables": {name: rows(report) for name, (_, rows) in figures.TABLES.items()},
        "first": first.isoformat(),
        "last": last.isoformat(),
        "problem": problem,
        "max_days": state.settings.report_max_days,
        "checkpoint": signed_head(state, latest) if latest is not None else None,
        "checkpoint_age": age,
    }
    return render(request, visitor, "overview.html", status=400 if problem else 200, **context)


@router.get("/overview.csv")
async def overview_csv(request: Request, visitor: LedgerReader, state: State) -> Response:
    """The overview's figures as the API's report CSV, for the same period."""
    first, last, _ = period(request, state)
    since, until = bounds(first, last)
    async with state.sessions() as db:
        report = await audit.report(db, since, until, state.settings.report_min_cell)
    name = f"trm-report-{first.isoformat()}-{last.isoformat()}.csv"
    return Response(
        audit.as_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/overview/{table}.csv")
async def overview_table_csv(
    table: str, request: Request, visitor: LedgerReader, state: State
) -> Response:
    """One of the overview's tables (a chart's too) as CSV, for the same period."""
    if table not in figures.TABLES:
        raise PageRefused(404, "not-found")
    first, last, _ = period(request, state)
    since, until = bounds(first, last)
    async with state.sessions() as db:
        report = await audit.report(db, since, until, state.settings.report_min_cell)
    header, rows = figures.TABLES[table]
    name = f"trm-{table}-{first.isoformat()}-{last.isoformat()}.csv"
    return Response(
        figures.as_csv(header, rows(report)),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )

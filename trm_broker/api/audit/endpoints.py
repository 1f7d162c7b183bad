"""`/v1/audit/report`: aggregates for auditors, as JSON or CSV."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from trm_broker.api.audit import service
from trm_broker.api.auth import SignedCaller
from trm_broker.api.deps import Session, State
from trm_broker.domain.participants import ParticipantKind
from trm_broker.web.problems import Forbidden, InvalidRequest
from trm_broker.web.query import Timestamp

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("/report", responses={200: {"content": {"text/csv": {}}}})
async def report(
    caller: SignedCaller,
    session: Session,
    state: State,
    since: Annotated[Timestamp, Query(alias="from")],
    until: Annotated[Timestamp, Query(alias="to")],
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Counts by message type and country pair and by ISO week, referral-to-reception times
    (overall and by country pair), alerts raised, alerts still open at `to`, refusals by rule
    and consent withdrawals in [from, to); cells under k are suppressed."""
    if caller.kind is not ParticipantKind.AUDITOR:
        raise Forbidden("The report is for auditors.")
    if until <= since:
        raise InvalidRequest("`to` must be after `from`.")
    longest = timedelta(days=state.settings.report_max_days)
    if until - since > longest:
        raise InvalidRequest(
            f"A report covers at most {longest.days} days (TRM_REPORT_MAX_DAYS); ask for "
            "several shorter periods."
        )
    data = await service.report(session, since, until, state.settings.report_min_cell)
    if format == "csv":
        return Response(service.as_csv(data), media_type="text/csv; charset=utf-8")
    return data

"""`/v1/cases/{case_ref}` and `/v1/alerts`, for the parties of a case."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from trm_broker.api.auth import SignedCaller
from trm_broker.api.cases import service
from trm_broker.api.cases.schemas import AlertList, CaseOut
from trm_broker.api.deps import Session, State

router = APIRouter(tags=["cases"])


@router.get("/v1/cases/{case_ref}", response_model=CaseOut)
async def case(case_ref: str, caller: SignedCaller, session: Session, state: State) -> CaseOut:
    """A case transfer's state and timeline (metadata only), for its parties: with its
    consents' scope, what each party may send next and under which consents, and its
    deadlines."""
    return await service.case_view(session, case_ref, caller, datetime.now(UTC), state.rules())


@router.get("/v1/alerts", response_model=AlertList)
async def alerts(
    caller: SignedCaller,
    session: Session,
    case_ref: Annotated[str | None, Query(max_length=64)] = None,
    include_closed: bool = False,
) -> AlertList:
    """Open alerts of your cases (auditors: of all): reception or monitoring overdue, a dead
    letter, a consent withdrawn, a header its payload contradicts."""
    return AlertList(alerts=await service.alerts(session, caller, case_ref, include_closed))

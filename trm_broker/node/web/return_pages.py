"""A receiving organisation's return page (issue 19): the return plan it was sent, in
readable form and printable as a case file, where the return stands, the reminders it is due,
and links to the steps it may send now (the step form of send.py, back here once sent).

The page is the case view's, scoped as the JSON API is: a case of another organisation, or
one whose plan was not sealed to the visitor's organisation, answers 404.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.node import case_view
from trm_broker.node.web.caseload import deadlines_of, steps_of
from trm_broker.node.web.pages import page_refusal, render_page, sent_notice
from trm_broker.node.web.render import PREFIX
from trm_broker.node.web.returns import return_of
from trm_broker.node.web.visitor import SignedIn
from trm_broker.web.page_app import PageRefused
from trm_broker.web.problems import Problem

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_CASE_REF = re.compile(CASE_REF_PATTERN)


@router.get("/returns/{case_ref}", response_class=HTMLResponse)
async def return_page(case_ref: str, request: Request, visitor: SignedIn) -> HTMLResponse:
    """The return plan sealed to the visitor's organisation, and what it does next."""
    if len(case_ref) > 64 or not _CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        try:
            view = await case_view.case_view(case_ref, state, db, visitor.principal)
        except Problem as exc:
            raise page_refusal(exc) from None
    found = return_of(view, steps_of(view), deadlines_of(view), datetime.now(UTC))
    if found is None:
        raise PageRefused(404, "not-found")
    return render_page(
        request,
        visitor,
        "return.html",
        case=view,
        found=found,
        may_send=visitor.principal.may_send(),
        sent=sent_notice(request),
        now=datetime.now(UTC),
    )

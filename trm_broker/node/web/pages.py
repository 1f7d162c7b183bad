"""The web app's pages: the dashboard, a case, a received message, and the audit log.

Every page is scoped as the JSON API is: through the signed-in person's
:class:`~trm_broker.node.access.Principal` and the API's own query and view functions. What
is not the organisation's answers 404, as for a case or message that does not exist.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import UUID7_PATTERN
from trm_broker.domain.messages import MessageType
from trm_broker.node import audit, case_view, consent_forms, received
from trm_broker.node.web import forms, i18n, refusals
from trm_broker.node.web.caseload import SHOWN, caseload, deadlines_of, designated, steps_of
from trm_broker.node.web.consent_scope import scope_of
from trm_broker.node.web.opening import case_here, is_sender, participants
from trm_broker.node.web.render import PREFIX, page
from trm_broker.node.web.returns import return_of
from trm_broker.node.web.visitor import AuditReader, SignedIn, Visitor
from trm_broker.web.page_app import PageRefused
from trm_broker.web.problems import Problem

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_CASE_REF = re.compile(CASE_REF_PATTERN)
_MESSAGE_ID = re.compile(UUID7_PATTERN)
AUDIT_PAGE = 100


def step_url(case_ref: str, message_type: str, recipient: str | None = None) -> str:
    """Where the form of a next step is (the forms of issue 19's next part)."""
    query = f"?{urlencode({'recipient': recipient})}" if recipient else ""
    return f"{PREFIX}/cases/{case_ref}/send/{message_type}{query}"


def render_page(request: Request, visitor: Visitor, template: str, **context: Any) -> HTMLResponse:
    gettext = i18n.translations(visitor.language).gettext
    language = visitor.language
    return page(
        request,
        template,
        language=language,
        time_zone=visitor.time_zone,
        visitor=visitor,
        step_url=step_url,
        # The broker's and the node's refusals, and why a step is not possible yet, in the
        # visitor's words: never the broker's English sentence where a catalog has one.
        step_words=lambda step: refusals.step_words(step, gettext, language),
        refusal_in_words=lambda problem: refusals.refusal_words(problem, gettext, language),
        **context,
    )


def _node(request: Request) -> NodeState:
    state: NodeState = request.app.state.node
    return state


def page_refusal(problem: Problem) -> PageRefused:
    """The JSON API's refusal, as a page: words, not codes."""
    if problem.status in (403, 404):
        return PageRefused(404, "not-found")
    if problem.status == 503:
        return PageRefused(503, "broker-unavailable")
    return PageRefused(502, "failed")


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, visitor: SignedIn) -> HTMLResponse:
    return await _dashboard(request, visitor)


@router.get("/find", response_class=HTMLResponse)
async def find_case(request: Request, visitor: SignedIn, case_ref: str = "") -> Response:
    """Open a case by its reference: one older than the dashboard shows."""
    wanted = case_ref.strip()
    if _CASE_REF.fullmatch(wanted):
        return RedirectResponse(f"{PREFIX}/cases/{wanted}", status_code=303)
    return await _dashboard(request, visitor, find=wanted[:64], status=400)


async def _dashboard(
    request: Request, visitor: Visitor, *, find: str | None = None, status: int = 200
) -> HTMLResponse:
    state = _node(request)
    async with state.sessions() as db:
        cases = await caseload(state, db, visitor.principal)
    known = {p.id: p for p in await participants(state)}
    own = known.get(visitor.principal.organisation or "")
    # A new case starts with its consent, registered by a focal point's case worker.
    may_open = visitor.principal.may_send() and (own is None or own.kind == "focal_point")
    return render_page(
        request,
        visitor,
        "dashboard.html",
        cases=cases,
        returns=designated(cases),
        may_open=may_open,
        find=find,
        shown_recent=SHOWN,
        status=status,
    )


@router.get("/cases/{case_ref}", response_class=HTMLResponse)
async def case_page(case_ref: str, request: Request, visitor: SignedIn) -> HTMLResponse:
    if len(case_ref) > 64 or not _CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    state = _node(request)
    async with state.sessions() as db:
        try:
            view = await case_here(case_ref, state, db, visitor.principal)
        except Problem as exc:
            raise page_refusal(exc) from None
        forms = await consent_forms.registered(
            db, visitor.principal.participants(state.keys), case_ref
        )
    known = await participants(state)
    # Each consent's scope: as the broker records it, else as registered here.
    recorded = {
        str(c.get("id")): c
        for c in ((view.broker or {}).get("consents") or [])
        if isinstance(c, dict)
    }
    recorded.update({f.consent_id: f.body for f in forms if f.consent_id not in recorded})
    now = datetime.now(UTC)
    scopes = {
        consent_id: scope_of(body, known, visitor.language, visitor.time_zone, now)
        for consent_id, body in recorded.items()
    }
    readable = visitor.principal.may_send() or visitor.principal.may_read_audit()
    return render_page(
        request,
        visitor,
        "case.html",
        case=view,
        steps=steps_of(view),
        deadlines=deadlines_of(view),
        may_send=visitor.principal.may_send(),
        sent=sent_notice(request),
        designated=return_of(view, [], [], datetime.now(UTC)) is not None,
        may_register=visitor.principal.may_send() and is_sender(view),
        registered=request.query_params.get("consent") == "registered",
        scopes=scopes,
        files={f.consent_id: f.id for f in forms} if readable else {},
    )


def sent_notice(request: Request) -> dict[str, Any] | None:
    """What the step form that sent the visitor here sent (``?sent=<type>&queued=1``)."""
    sent = request.query_params.get("sent", "")
    if sent not in {t.value for t in MessageType}:
        return None
    return {"type": sent, "queued": request.query_params.get("queued") == "1"}


@router.get("/messages/{message_id}", response_class=HTMLResponse)
async def message_page(message_id: str, request: Request, visitor: SignedIn) -> HTMLResponse:
    """A received message, only for the organisation it was sealed to: else 404."""
    if not _MESSAGE_ID.match(message_id):
        raise PageRefused(404, "not-found")
    state = _node(request)
    async with state.sessions() as db:
        row = await received.addressed_to(
            db, message_id, visitor.principal.participants(state.keys)
        )
    if row is None:
        raise PageRefused(404, "not-found")
    message = case_view.received_view(row, state.settings.node_withdrawn_retention)
    gettext = i18n.translations(visitor.language).gettext
    try:
        words = forms.content_words(MessageType(message.type), gettext, visitor.language)
    except ValueError:  # a type this node's forms do not know: its codes as they are
        words = forms.ContentWords({}, {})
    # A restricted message whose content the node has deleted says so (docs/node.md).
    return render_page(
        request,
        visitor,
        "message.html",
        message=message,
        consent_ref=row.consent_ref,
        words=words,
        printed_at=datetime.now(UTC),
        deleted_at=row.purged_at,
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, visitor: AuditReader) -> HTMLResponse:
    """The audit log of the supervisor's organisation, read-only, a page at a time."""
    after_text = request.query_params.get("after", "")
    after = int(after_text) if after_text.isdigit() and len(after_text) < 18 else None
    state = _node(request)
    async with state.sessions() as db:
        rows = await audit.entries(
            db, organisation=visitor.principal.organisation, after=after, limit=AUDIT_PAGE
        )
    more = rows[-1].seq if len(rows) == AUDIT_PAGE else None
    return render_page(request, visitor, "audit.html", entries=rows, more=more)

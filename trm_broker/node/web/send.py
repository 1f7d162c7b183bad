"""Sending a case's next step from the browser (issue 19): the form of a step the broker's
workflow allows now, generated from its payload schema (forms.py), sent through the very
send path of the JSON API's per-type calls (``outbox_calls.send``: composed, sealed, signed,
queued), waiting briefly for the broker's receipt.

Only a step of the case's ``next_steps`` for the caller's organisation is offered; a blocked
one shows the rule's sentence and no form. The consent is filled in by the node when one
consent of the case covers the step; when several do, the case worker chooses.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.messages import MessageType
from trm_broker.domain.payloads import PAYLOAD_MODELS
from trm_broker.node import outbox_calls
from trm_broker.node.schemas import SendRequest
from trm_broker.node.sent_schemas import CaseViewOut
from trm_broker.node.web import forms, i18n, refusals
from trm_broker.node.web.caseload import steps_of
from trm_broker.node.web.opening import case_here
from trm_broker.node.web.pages import page_refusal, render_page, step_url
from trm_broker.node.web.render import PREFIX
from trm_broker.node.web.visitor import Form, SignedIn, Visitor
from trm_broker.web.page_app import PageRefused
from trm_broker.web.problems import Problem

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_CASE_REF = re.compile(CASE_REF_PATTERN)
#: How long a form's post waits for the broker's receipt before showing "queued".
WAIT_SECONDS = 5
#: The form's own fields, beside the payload's (read_form ignores names it does not know).
CONSENT_FIELD, FORM_ID_FIELD, BACK_FIELD = "consent_ref", "form_id", "back"
#: Where a sent form brings the case worker back to: the case page, or the return page
#: (``back=return``: a receiving organisation's step opened from its return page).
RETURN_PAGE = "return"
_FORM_ID = re.compile(r"^[0-9a-f]{32}$")
ROUTE = "POST /web/cases/{case_ref}/send/{message_type}"


def _case_worker(visitor: SignedIn) -> Visitor:
    if not visitor.principal.may_send():
        raise PageRefused(403, "case-workers-only")
    return visitor


async def _case_worker_page(visitor: SignedIn) -> Visitor:
    """:func:`_case_worker` as a dependency (async: not run in a worker thread)."""
    return _case_worker(visitor)


CaseWorkerPage = Annotated[Visitor, Depends(_case_worker_page)]


@dataclass(frozen=True)
class Step:
    """The step asked for, as the case view states it for the caller's organisation
    (``found`` None: the case offers no such step to it)."""

    case: CaseViewOut
    message_type: MessageType
    recipient: str
    found: dict[str, Any] | None

    @property
    def allowed(self) -> bool:
        return bool(self.found and self.found.get("allowed"))

    @property
    def consents(self) -> list[str]:
        found = (self.found or {}).get("consents") or []
        return [c for c in found if isinstance(c, str)]

    @property
    def opening(self) -> bool:
        """The referral of a case opened here, unknown to the broker yet (web/opening.py)."""
        return bool((self.found or {}).get("opening"))

    @property
    def consent_needed(self) -> bool:
        return bool((self.found or {}).get("consent_needed"))


async def _step(request: Request, visitor: Visitor, case_ref: str, message_type: str) -> Step:
    if len(case_ref) > 64 or not _CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    try:
        kind = MessageType(message_type)
    except ValueError:
        raise PageRefused(404, "not-found") from None
    if kind not in PAYLOAD_MODELS or kind is MessageType.CONSENT_WITHDRAWAL:
        raise PageRefused(404, "not-found")
    recipient = request.query_params.get("recipient", "")
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        try:
            view = await case_here(case_ref, state, db, visitor.principal)
        except Problem as exc:
            raise page_refusal(exc) from None
    found = next(
        (
            step
            for step in steps_of(view)
            if step.get("type") == kind.value and step.get("recipient") == recipient
        ),
        None,
    )
    return Step(view, kind, recipient, found)


def _zone(visitor: Visitor) -> tzinfo:
    try:
        return ZoneInfo(visitor.time_zone) if visitor.time_zone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _form_page(
    request: Request,
    visitor: Visitor,
    step: Step,
    *,
    values: dict[str, list[str]] | None = None,
    errors: dict[str, str] | None = None,
    refusal: dict[str, Any] | None = None,
    consent_error: bool = False,
    status: int = 200,
) -> HTMLResponse:
    gettext = i18n.translations(visitor.language).gettext
    texts = forms.FormTexts.translated(gettext)
    specs = forms.form_spec(step.message_type, gettext, visitor.language)
    values = values or {}
    bound = forms.bind(specs, values, errors, texts)
    summary = forms.error_summary(bound, errors or {})
    found = step.found or {}
    blocked = refusals.step_words(found, gettext, visitor.language)
    chosen = (values.get(CONSENT_FIELD) or [""])[0]
    form_id = (values.get(FORM_ID_FIELD) or [""])[0]
    back = (values.get(BACK_FIELD) or [request.query_params.get(BACK_FIELD, "")])[0]
    return render_page(
        request,
        visitor,
        "send.html",
        status=status,
        case=step.case,
        step=step,
        fields=bound,
        texts=texts,
        summary=summary,
        refusal=refusal,
        refusal_words=refusals.refusal_words(refusal, gettext, visitor.language)
        if refusal
        else None,
        blocked=blocked,
        consent_error=consent_error,
        chosen_consent=chosen,
        form_id=form_id if _FORM_ID.match(form_id) else uuid.uuid4().hex,
        action=step_url(step.case.case_ref, step.message_type.value, step.recipient),
        back=RETURN_PAGE if back == RETURN_PAGE else "",
    )


@router.get("/cases/{case_ref}/send/{message_type}", response_class=HTMLResponse)
async def step_form(
    case_ref: str, message_type: str, request: Request, visitor: CaseWorkerPage
) -> HTMLResponse:
    """The form of an allowed next step; a blocked one's rule in words, and no form."""
    step = await _step(request, visitor, case_ref, message_type)
    return _form_page(request, visitor, step)


@router.post("/cases/{case_ref}/send/{message_type}", response_class=HTMLResponse)
async def send_step(case_ref: str, message_type: str, request: Request, form: Form) -> Response:
    """The form read (errors: shown on their fields, 400), then sent as the JSON API sends."""
    visitor = _case_worker(form.visitor)
    step = await _step(request, visitor, case_ref, message_type)
    if not step.allowed:
        return _form_page(request, visitor, step, status=409)
    submitted = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    gettext = i18n.translations(visitor.language).gettext
    result = forms.read_form(step.message_type, submitted, _zone(visitor), gettext)
    values = result.values
    chosen = (values.get(CONSENT_FIELD) or [""])[0]
    # One consent covering it: the node fills it in. Several: the case worker names one.
    several = step.consent_needed and len(step.consents) > 1
    consent_error = several and chosen not in step.consents
    if result.payload is None or consent_error:
        return _form_page(
            request,
            visitor,
            step,
            values=values,
            errors=result.errors,
            consent_error=consent_error,
            status=400,
        )
    message = SendRequest(
        type=step.message_type,
        case_ref=step.case.case_ref,
        recipient=step.recipient,
        payload=result.payload,
        # A referral opens its case: it names its consent (the broker has no case to read).
        consent_ref=chosen if several else (step.consents[0] if step.opening else None),
    )
    form_id = (values.get(FORM_ID_FIELD) or [""])[0]
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        try:
            response = await outbox_calls.send(
                state.sending,
                db,
                visitor.principal,
                message,
                request,
                route=ROUTE,
                key=form_id if _FORM_ID.match(form_id) else None,
                prefer=f"wait={WAIT_SECONDS}",
                plan=step.message_type is MessageType.RETURN_PREPARATION,
            )
        except Problem as exc:
            refusal = exc.body()
            status = exc.status
        else:
            refusal = outbox_calls.json_body(response)
            status = response.status_code
    if status in (201, 202):
        notice = {"sent": step.message_type.value, "queued": "1" if status == 202 else "0"}
        page = "returns" if (values.get(BACK_FIELD) or [""])[0] == RETURN_PAGE else "cases"
        target = f"{PREFIX}/{page}/{step.case.case_ref}?{urlencode(notice)}"
        return RedirectResponse(target, status_code=303)
    return _form_page(
        request,
        visitor,
        step,
        values=values,
        refusal=refusal,
        status=status if 400 <= status < 500 else 502,
    )

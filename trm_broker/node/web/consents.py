"""Registering a consent from the browser (issue 19): a focal point's case worker uploads the
signed consent form and says its scope in words; the node keeps the file, computes its
digest (``form_digest``), shows the scope in plain words to confirm, and registers the
consent at the broker through the JSON API's own path (node/consent_calls.py). A new case
starts here: its next step is then the referral (web/opening.py).

The form is ``multipart/form-data`` with the session's CSRF token (web/uploads.py); the file
must be a PDF, PNG or JPEG (told by its first bytes) of at most
:data:`~trm_broker.node.consent_forms.MAX_BYTES`. The kept form is downloaded from the case
page by the organisation's case workers and supervisors; to anyone else it does not exist.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trm_broker.domain.consent import GivenBy
from trm_broker.domain.envelope import CASE_REF_PATTERN
from trm_broker.domain.ids import uuid7
from trm_broker.domain.messages import DataCategory, MessageType
from trm_broker.node import case_view, consent_calls, consent_forms, sent_api
from trm_broker.node.consent_forms import ConsentForm
from trm_broker.node.schemas import ConsentRequest
from trm_broker.node.web import i18n, refusals
from trm_broker.node.web.consent_scope import scope_of
from trm_broker.node.web.opening import Participant, participants
from trm_broker.node.web.pages import render_page
from trm_broker.node.web.render import PREFIX
from trm_broker.node.web.uploads import Upload, UploadForm
from trm_broker.node.web.visitor import Form, SignedIn, Visitor
from trm_broker.web.page_app import PageRefused
from trm_broker.web.problems import Problem

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_CASE_REF = re.compile(CASE_REF_PATTERN)
_FORM_ID = re.compile(r"^[0-9a-f]{32}$")
NEW_CASE = PREFIX + "/new-case"
#: The paths that take an upload, and the body they take: the file's limit, and room to
#: refuse a larger file in words (a larger body still is refused by the node's limits).
UPLOADS = (
    (re.compile(re.escape(NEW_CASE)), 3 * consent_forms.MAX_BYTES),
    (re.compile(re.escape(PREFIX) + r"/cases/[^/]{1,64}/consent"), 3 * consent_forms.MAX_BYTES),
)
#: What a consent may be for: every message that cites one (a withdrawal cites none).
PURPOSES = tuple(t.value for t in MessageType if t is not MessageType.CONSENT_WITHDRAWAL)
CATEGORIES = tuple(c.value for c in DataCategory)
GIVEN_BY = tuple(g.value for g in GivenBy)
FILE_FIELD = "form"


def consent_url(case_ref: str | None) -> str:
    return f"{PREFIX}/cases/{case_ref}/consent" if case_ref else NEW_CASE


def _case_worker(visitor: Visitor) -> Visitor:
    if not visitor.principal.may_send():
        raise PageRefused(403, "case-workers-only")
    return visitor


def _checked_case(case_ref: str) -> str:
    if len(case_ref) > 64 or not _CASE_REF.match(case_ref):
        raise PageRefused(404, "not-found")
    return case_ref


async def _sender_of(request: Request, visitor: Visitor, case_ref: str) -> None:
    """Only the case's sending focal point registers its consents (§7): else 404, as for a
    case of another organisation."""
    from trm_broker.node.web.opening import case_here, is_sender

    state = request.app.state.node
    async with state.sessions() as db:
        try:
            view = await case_here(case_ref, state, db, visitor.principal)
        except Problem:
            raise PageRefused(404, "not-found") from None
    if not is_sender(view):
        raise PageRefused(404, "not-found")


def _suggested_case_ref(own: Participant | None, today: date) -> str:
    country = own.country if own is not None and own.country else "XX"
    return f"{country}-{today.year}-{secrets.token_hex(3).upper()}"


async def _form_page(
    request: Request,
    visitor: Visitor,
    case_ref: str | None,
    *,
    values: dict[str, list[str]] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    known = await participants(request.app.state.node)
    own = next((p for p in known if p.id == visitor.principal.organisation), None)
    today = datetime.now(i18n.zone(visitor.time_zone)).date()
    values = values or {
        "case_ref": [_suggested_case_ref(own, today)],
        "valid_from": [today.isoformat()],
    }
    return render_page(
        request,
        visitor,
        "consent_form.html",
        status=status,
        case_ref=case_ref,
        action=consent_url(case_ref),
        values=values,
        errors=errors or {},
        participants=known,
        country_names=i18n_countries(visitor.language),
        purposes=PURPOSES,
        categories=CATEGORIES,
        given_by=GIVEN_BY,
        max_megabytes=consent_forms.MAX_BYTES // (1024 * 1024),
    )


def i18n_countries(language: str) -> dict[str, str]:
    from babel import Locale

    return dict(Locale.parse(language).territories)


@router.get("/new-case", response_class=HTMLResponse)
async def new_case(request: Request, visitor: SignedIn) -> HTMLResponse:
    """A new case begins with its consent: the upload form, with a case reference."""
    return await _form_page(request, _case_worker(visitor), None)


@router.get("/cases/{case_ref}/consent", response_class=HTMLResponse)
async def consent_form(case_ref: str, request: Request, visitor: SignedIn) -> HTMLResponse:
    _case_worker(visitor)
    await _sender_of(request, visitor, _checked_case(case_ref))
    return await _form_page(request, visitor, case_ref)


@router.post("/new-case", response_class=HTMLResponse)
async def upload_new_case(request: Request, upload: UploadForm) -> Response:
    return await _uploaded(request, upload, None)


@router.post("/cases/{case_ref}/consent", response_class=HTMLResponse)
async def upload_consent(case_ref: str, request: Request, upload: UploadForm) -> Response:
    _case_worker(upload.visitor)
    await _sender_of(request, upload.visitor, _checked_case(case_ref))
    return await _uploaded(request, upload, case_ref)


async def _uploaded(request: Request, upload: Upload, case_ref: str | None) -> Response:
    """The form read: errors back on their fields (400); else the file kept as a draft and
    the case worker sent to confirm the scope (303)."""
    visitor = _case_worker(upload.visitor)
    state = request.app.state.node
    known = await participants(state)
    errors: dict[str, str] = {}
    consent = _read_consent(upload, case_ref, known, visitor, errors)
    file = upload.files.get(FILE_FIELD)
    media_type = None
    if file is None or not file.data:
        errors[FILE_FIELD] = "file-missing"
    elif len(file.data) > consent_forms.MAX_BYTES:
        errors[FILE_FIELD] = "file-too-large"
    else:
        media_type = consent_forms.media_type_of(file.data)
        if media_type is None:
            errors[FILE_FIELD] = "file-type"
    organisation = visitor.principal.organisation
    if case_ref is None and "case_ref" not in errors and organisation is not None:
        async with state.sessions() as db:
            if await _case_known(db, [organisation], str(consent.get("case_ref"))):
                errors["case_ref"] = "case-exists"
    if errors or file is None or media_type is None or organisation is None:
        values = {k: v for k, v in upload.fields.items() if k != "csrf_token"}
        return await _form_page(
            request, visitor, case_ref, values=values, errors=errors, status=400
        )
    consent["form_digest"] = consent_forms.digest_of(file.data)
    now = datetime.now(UTC)
    row = ConsentForm(
        id=uuid.uuid4().hex,
        organisation=organisation,
        case_ref=str(consent["case_ref"]),
        consent_id=str(consent["id"]),
        consent=json.dumps(consent),
        media_type=media_type,
        size=len(file.data),
        digest=consent["form_digest"],
        content=file.data,
        uploaded_by=visitor.principal.user,
        uploaded_at=now,
        registered_at=None,
    )
    async with state.sessions() as db:
        await consent_forms.drop_stale_drafts(db, now)
        db.add(row)
        await db.commit()
    return RedirectResponse(f"{PREFIX}/consent-forms/{row.id}", status_code=303)


async def _case_known(db: Any, organisations: list[str], case_ref: str) -> bool:
    """The organisation has the case already here: messages sent or received, or a consent."""
    if await consent_forms.registered(db, organisations, case_ref):
        return True
    queued, legacy = await sent_api.of_case(db, case_ref, organisations)
    if queued or legacy:
        return True
    return bool(await case_view._received(db, case_ref, organisations[0]))


def _read_consent(
    upload: Upload,
    case_ref: str | None,
    known: list[Participant],
    visitor: Visitor,
    errors: dict[str, str],
) -> dict[str, Any]:
    """The consent's body (`ConsentIn`) from the form, or ``errors`` by field."""
    chosen_case = case_ref or upload.one("case_ref")
    if not chosen_case:
        errors["case_ref"] = "required"
    elif len(chosen_case) > 64 or not _CASE_REF.match(chosen_case):
        errors["case_ref"] = "case-ref-format"
    given_by = upload.one("given_by")
    if given_by not in GIVEN_BY:
        errors["given_by"] = "choose-one"
    lists: dict[str, list[str]] = {}
    offered = {
        "purposes": PURPOSES,
        "recipients": tuple(p.id for p in known),
        "data_categories": CATEGORIES,
    }
    for name, allowed in offered.items():
        picked = list(dict.fromkeys(v for v in upload.fields.get(name, []) if v in allowed))
        if not picked:
            errors[name] = "choose-at-least-one"
        lists[name] = picked
    zone = i18n.zone(visitor.time_zone)
    starts = _day(upload.one("valid_from"), "valid_from", errors, required=True)
    ends = _day(upload.one("valid_until"), "valid_until", errors, required=False)
    if starts is not None and ends is not None and ends < starts:
        errors["valid_until"] = "until-before-from"
    body: dict[str, Any] = {
        "id": str(uuid7()),
        "case_ref": chosen_case,
        "given_by": given_by,
        **lists,
    }
    if starts is not None:
        body["valid_from"] = datetime.combine(starts, time(), zone).astimezone(UTC).isoformat()
    if ends is not None:  # valid through that day, in the case worker's time zone
        after = datetime.combine(ends + timedelta(days=1), time(), zone)
        body["valid_until"] = after.astimezone(UTC).isoformat()
    return body


def _day(text: str, name: str, errors: dict[str, str], *, required: bool) -> date | None:
    if not text:
        if required:
            errors[name] = "date"
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors[name] = "date"
        return None
    if not 2000 <= day.year <= 9000:
        errors[name] = "date"
        return None
    return day


# --- the confirmation, the registration and the kept form ---------------------------------


async def _kept(request: Request, visitor: Visitor, form_id: str) -> ConsentForm:
    if not _FORM_ID.match(form_id):
        raise PageRefused(404, "not-found")
    state = request.app.state.node
    async with state.sessions() as db:
        row = await consent_forms.get(db, form_id, visitor.principal.participants(state.keys))
    if row is None:
        raise PageRefused(404, "not-found")
    return row


async def _confirm_page(
    request: Request,
    visitor: Visitor,
    row: ConsentForm,
    *,
    refusal: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    state = request.app.state.node
    known = await participants(state)
    async with state.sessions() as db:
        existing = await _case_known(db, [row.organisation], row.case_ref)
    scope = scope_of(row.body, known, visitor.language, visitor.time_zone, datetime.now(UTC))
    return render_page(
        request,
        visitor,
        "consent_confirm.html",
        status=status,
        form=row,
        scope=scope,
        refusal=refusals.consent_refusal_words(
            refusal, i18n.translations(visitor.language).gettext, visitor.language
        )
        if refusal
        else None,
        kilobytes=max(1, round(row.size / 1024)),
        again=consent_url(row.case_ref if existing else None),
    )


def _registered_url(row: ConsentForm) -> str:
    return f"{PREFIX}/cases/{row.case_ref}?{urlencode({'consent': 'registered'})}"


@router.get("/consent-forms/{form_id}", response_class=HTMLResponse)
async def confirm(form_id: str, request: Request, visitor: SignedIn) -> Response:
    """The scope in plain words, and the button that registers it."""
    row = await _kept(request, _case_worker(visitor), form_id)
    if row.registered_at is not None:
        return RedirectResponse(_registered_url(row), status_code=303)
    return await _confirm_page(request, visitor, row)


@router.post("/consent-forms/{form_id}", response_class=HTMLResponse)
async def register(form_id: str, request: Request, form: Form) -> Response:
    """Registered at the broker, as `POST /consents` registers (once per form: the form's
    id is the Idempotency-Key); then the case, with its next step."""
    visitor = _case_worker(form.visitor)
    row = await _kept(request, visitor, form_id)
    if row.registered_at is not None:
        return RedirectResponse(_registered_url(row), status_code=303)
    state = request.app.state.node
    body = ConsentRequest(sender=row.organisation, consent=row.body)
    async with state.sessions() as db:
        try:
            await consent_calls.register(
                state.sending,
                db,
                visitor.principal,
                request,
                body,
                route="POST /web/consent-forms/{form_id}",
                key=row.id,
            )
        except Problem as exc:
            return await _confirm_page(
                request,
                visitor,
                row,
                refusal=exc.body(),
                status=exc.status if 400 <= exc.status < 500 else 502,
            )
        kept = await db.get(ConsentForm, row.id)
        if kept is not None:
            kept.registered_at = datetime.now(UTC)
            await db.commit()
    return RedirectResponse(_registered_url(row), status_code=303)


@router.get("/consent-forms/{form_id}/file")
async def download(form_id: str, request: Request, visitor: SignedIn) -> Response:
    """The signed form as it was uploaded, to the organisation's case workers and
    supervisors."""
    if not (visitor.principal.may_send() or visitor.principal.may_read_audit()):
        raise PageRefused(403, "case-workers-only")
    row = await _kept(request, visitor, form_id)
    return Response(
        row.content,
        media_type=row.media_type,
        headers={"content-disposition": f'attachment; filename="{row.file_name}"'},
    )

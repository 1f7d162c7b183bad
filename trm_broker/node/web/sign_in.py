"""Signing in and out of the web app, and choosing its language.

Sign-in takes a node user's name and password (argon2id, as ``POST /login``) and opens a
server-side session (node/web/sessions.py). The sign-in form carries a token bound to a
short-lived cookie of its own (a double-submit token: there is no session yet to tie it to),
so no other site can sign a browser in as someone else (login CSRF).
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trm_broker.node import sign_in_throttle, users
from trm_broker.node.audit import Caller, note_caller
from trm_broker.node.web import i18n, sessions
from trm_broker.node.web.render import PREFIX, page
from trm_broker.node.web.visitor import Form, clock, language_of, lifetimes
from trm_broker.web.page_app import CSRF_FIELD, PageRefused, forget_cookie, form_fields, set_cookie

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

#: The sign-in form's own token cookie (login CSRF), for the sign-in page only.
SIGN_IN_COOKIE = "__Host-trm_signin"
router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: The language cookie lasts a year.
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600


def local_path(target: str | None) -> str:
    """Where to go after sign-in or a language change: a page of this app, never elsewhere
    (an open redirect would lend the node's name to a phishing link)."""
    if target and target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return PREFIX + "/"


def _sign_in_page(
    request: Request, *, status: int = 200, problem: str | None = None, user: str = ""
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = page(
        request,
        "sign_in.html",
        language=language_of(request),
        status=status,
        sign_in_token=token,
        next_page=local_path(request.query_params.get("next")),
        problem=problem or request.query_params.get("note"),
        user=user,
    )
    set_cookie(response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(request: Request) -> HTMLResponse:
    return _sign_in_page(request)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    state: NodeState = request.app.state.node
    fields = await form_fields(request)
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    given = fields.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        raise PageRefused(403, "csrf-sign-in")
    name = fields.get("user", "").strip().lower()[:64]
    password = fields.get("password", "")[:1024]
    address = request.client.host if request.client else "unknown"
    now = clock(request)
    limiter = sign_in_throttle.of(request.app.state)
    if limiter.wait(name, address, now) is not None:
        return _sign_in_page(request, status=429, problem="throttled", user=name)
    async with state.sessions() as db:
        account = await users.user(db, name) if name else None
        if account is not None:  # audited either way: refused sign-ins are a finding
            note_caller(
                request.scope, Caller(account.name, account.organisation, account.role.value)
            )
        matches = users.password_matches(account, password)
        if account is None or not matches or account.disabled_at is not None:
            limiter.failed(name, address, now)
            return _sign_in_page(request, status=401, problem="wrong", user=name)
        if account.organisation not in state.keys.current:
            raise PageRefused(403, "organisation-not-served")
        limiter.succeeded(name)
        time_zone = i18n.known_zone(fields.get("time_zone"))
        session_id = await sessions.begin(
            db, account.name, now, lifetimes(state.settings), time_zone
        )
        await db.commit()
    response = RedirectResponse(local_path(fields.get("next")), status_code=303)
    set_cookie(response, sessions.COOKIE, session_id)
    forget_cookie(response, SIGN_IN_COOKIE)
    if account.language in i18n.languages():  # the user's choice, on any browser they use
        set_cookie(response, i18n.COOKIE, str(account.language), max_age=LANGUAGE_COOKIE_AGE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, form: Form) -> Response:
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        await sessions.end(db, request.cookies.get(sessions.COOKIE, ""))
        await db.commit()
    response = RedirectResponse(f"{PREFIX}/sign-in?note=signed-out", status_code=303)
    forget_cookie(response, sessions.COOKIE)
    return response


@router.get("/language/{code}")
async def choose_language(code: str, request: Request) -> Response:
    """Remember the language chosen (a cookie of a year), and go back to the page."""
    response = RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    if code in i18n.languages():
        set_cookie(response, i18n.COOKIE, code, max_age=LANGUAGE_COOKIE_AGE)
    return response

"""Signing in to the console with a registered key, never a password (issue 20).

1. The auditor's tool (`trm-broker console login`) asks for a challenge in a request signed
   with the auditor's key (RFC 9421, as every API call): only an auditor's or operator's
   key gets one. The challenge is bound to that key and lives two minutes.
2. The tool signs the challenge (:mod:`~trm_broker.crypto.console_challenge`) and prints a
   link carrying challenge, key id and signature.
3. Opening the link shows a page with one button; posting it checks the signature with the
   registered key, uses the challenge up, and opens a session (a ``__Host-`` cookie,
   HttpOnly, SameSite=Strict). The button's form carries a token bound to a short-lived
   cookie of its own (double submit: there is no session yet), so no other site can sign a
   browser in as someone else (login CSRF); and a link previewer that fetches the link does
   not use it up.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from trm_broker.api.auth import SignedCaller
from trm_broker.api.console.visitor import (
    CHALLENGE_TTL,
    COOKIE,
    LIFETIMES,
    PAGES,
    PREFIX,
    ConsoleForm,
    clock,
)
from trm_broker.api.deps import Session, State
from trm_broker.crypto import console_challenge as challenges
from trm_broker.domain.times import rfc3339
from trm_broker.store import console_sessions
from trm_broker.store import participants as registry
from trm_broker.web.page_app import (
    CSRF_FIELD,
    PageRefused,
    forget_cookie,
    form_fields,
    set_cookie,
    tokens_match,
)
from trm_broker.web.problems import Forbidden

#: The sign-in button's own token cookie (login CSRF), for the sign-in page only.
SIGN_IN_COOKIE = "__Host-trm_console_signin"
router = APIRouter(prefix=PREFIX, include_in_schema=False)


def local_path(target: str | None) -> str:
    """A page of the console, never elsewhere (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target:
        return target
    return PREFIX + "/ledger"


@router.post("/challenges")
async def challenge(caller: SignedCaller, session: Session, request: Request) -> dict[str, Any]:
    """A sign-in challenge for the key that signed the request (auditors and operators)."""
    if caller.kind not in console_sessions.CONSOLE_KINDS:
        raise Forbidden("Only auditors and operators sign in to the console.")
    now = clock(request)
    issued = await console_sessions.issue_challenge(session, caller.kid, now, CHALLENGE_TTL)
    await session.commit()
    return {
        "challenge": issued,
        "kid": caller.kid,
        "expires_at": rfc3339(now + CHALLENGE_TTL),
        "sign_in_path": challenges.SIGN_IN_PATH,
    }


def _sign_in_page(request: Request, *, status: int = 200, problem: str | None = None) -> Response:
    query = request.query_params
    link = {name: query.get(name, "")[:512] for name in ("challenge", "key", "signature")}
    token = secrets.token_urlsafe(32)
    response = PAGES.page(
        request,
        "sign_in.html",
        status=status,
        link=link if all(link.values()) else None,
        sign_in_token=token,
        next_page=local_path(query.get("next")),
        problem=problem or query.get("note"),
        broker_url=_broker_url(request),
    )
    set_cookie(response, SIGN_IN_COOKIE, token, max_age=600)
    return response


def _broker_url(request: Request) -> str:
    public: str | None = request.app.state.broker.settings.public_url
    return (public or str(request.base_url)).rstrip("/")


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    return _sign_in_page(request)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, state: State) -> Response:
    fields = await form_fields(request)
    if not tokens_match(request.cookies.get(SIGN_IN_COOKIE, ""), fields.get(CSRF_FIELD)):
        raise PageRefused(403, "csrf-sign-in")
    given = fields.get("challenge", "")[:512]
    kid = fields.get("key", "")[:128]
    signature = fields.get("signature", "")[:512]
    now = clock(request)
    async with state.sessions() as db:
        issued_to = await console_sessions.take_challenge(db, given, now) if given else None
        key = await registry.key(db, kid) if issued_to is not None and issued_to == kid else None
        participant = await registry.get(db, key.participant_id) if key is not None else None
        if (
            key is None
            or participant is None
            or not registry.is_usable(key, now)
            or not challenges.answers(key.public_key, kid, given, signature)
        ):
            await db.commit()  # the challenge is used up either way
            return _sign_in_page(request, status=401, problem="link-refused")
        if participant.kind not in console_sessions.CONSOLE_KINDS:
            await db.commit()
            raise PageRefused(403, "not-an-auditor")
        session_id = await console_sessions.begin(db, kid, now, LIFETIMES)
        await db.commit()
    response = RedirectResponse(local_path(fields.get("next")), status_code=303)
    set_cookie(response, COOKIE, session_id)
    forget_cookie(response, SIGN_IN_COOKIE)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, form: ConsoleForm, state: State) -> Response:
    async with state.sessions() as db:
        await console_sessions.end(db, request.cookies.get(COOKIE, ""))
        await db.commit()
    response = RedirectResponse(f"{PREFIX}/sign-in?note=signed-out", status_code=303)
    forget_cookie(response, COOKIE)
    return response


@router.get("/language/{code}")
async def choose_language(code: str, request: Request) -> Response:
    """Remember the language chosen (a cookie of a year), and go back to the page."""
    response = RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    if code in PAGES.catalogs.languages():
        set_cookie(response, PAGES.catalogs.cookie, code, max_age=365 * 24 * 3600)
    return response

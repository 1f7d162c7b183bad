"""Who is signed in to the console, and the checks every page and form makes.

A page takes :data:`ConsoleReader` (an auditor or operator) or :data:`LedgerReader` (an
auditor: operators read the registry and health, not the ledger's entries, as in the API);
a form post takes :data:`ConsoleForm`, which also checks the session's CSRF token
(OWASP CSRF Prevention Cheat Sheet, "Synchronizer Token Pattern").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from trm_broker.api.console.render import Pages
from trm_broker.api.deps import State
from trm_broker.domain.participants import ParticipantKind
from trm_broker.store import console_sessions
from trm_broker.store.console_sessions import ConsoleUser
from trm_broker.web.i18n import Catalogs
from trm_broker.web.page_app import (
    CSRF_FIELD,
    PageRefused,
    SignInNeeded,
    form_fields,
    tokens_match,
)

PREFIX = "/console"
STATIC = PREFIX + "/static"
#: The session cookie: ``__Host-`` so it is Secure, host-only and for the path ``/``
#: (RFC 6265bis §4.1.3.2); HttpOnly and SameSite=Strict as it is set.
COOKIE = "__Host-trm_console"
LANGUAGE_COOKIE = "__Host-trm_console_lang"
#: Sessions end after half an hour unused, or eight hours after sign-in; links after two minutes.
LIFETIMES = console_sessions.Lifetimes(idle=timedelta(minutes=30), absolute=timedelta(hours=8))
CHALLENGE_TTL = timedelta(minutes=2)
_MAX_FORM = 16 * 1024
_HERE = Path(__file__).parent

PAGES = Pages(
    templates=_HERE / "templates",
    catalogs=Catalogs(_HERE / "locale", LANGUAGE_COOKIE),
    prefix=PREFIX,
    static=STATIC,
)


@dataclass(frozen=True)
class Visitor:
    user: ConsoleUser
    language: str

    @property
    def csrf_token(self) -> str:
        return self.user.csrf_secret

    @property
    def reads_ledger(self) -> bool:
        return self.user.kind is ParticipantKind.AUDITOR


def clock(request: Request) -> datetime:
    """Now; tests move time on by setting the app's ``state.console_clock`` to a callable."""
    moved = getattr(request.app.state, "console_clock", None)
    return moved() if callable(moved) else datetime.now(UTC)


async def console_reader(request: Request, state: State) -> Visitor:
    session_id = request.cookies.get(COOKIE)
    found = None
    if session_id:
        async with state.sessions() as db:
            found = await console_sessions.resume(db, session_id, clock(request), LIFETIMES)
            await db.commit()
    if found is None:
        raise SignInNeeded(ended=bool(session_id))
    return Visitor(found, PAGES.language_of(request))


async def ledger_reader(visitor: Annotated[Visitor, Depends(console_reader)]) -> Visitor:
    if not visitor.reads_ledger:
        raise PageRefused(403, "auditors-only")
    return visitor


@dataclass(frozen=True)
class PostedForm:
    visitor: Visitor
    fields: dict[str, str]


async def checked_form(
    request: Request, visitor: Annotated[Visitor, Depends(console_reader)]
) -> PostedForm:
    """A form of the visitor's session: refused (403) without its CSRF token."""
    fields = await form_fields(request, _MAX_FORM)
    if not tokens_match(visitor.csrf_token, fields.get(CSRF_FIELD)):
        raise PageRefused(403, "csrf")
    return PostedForm(visitor, fields)


ConsoleReader = Annotated[Visitor, Depends(console_reader)]
LedgerReader = Annotated[Visitor, Depends(ledger_reader)]
ConsoleForm = Annotated[PostedForm, Depends(checked_form)]

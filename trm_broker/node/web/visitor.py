"""Who is signed in to the web app, and the checks every page and form makes.

A page takes :data:`SignedIn` (any user of an organisation the node serves) or
:data:`AuditReader` (a supervisor); a form post takes :data:`Form`, which also checks the
session's CSRF token. Each yields the person as a :class:`~trm_broker.node.access.Principal`,
so pages are scoped by the very rules of the JSON API, and tells the audit log who acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from trm_broker.node.access import Principal
from trm_broker.node.audit import Caller, note_caller
from trm_broker.node.web import i18n, sessions
from trm_broker.settings import Settings
from trm_broker.web.page_app import (
    CSRF_FIELD,
    PageRefused,
    SignInNeeded,
    form_fields,
    tokens_match,
)

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

_MAX_FORM = 64 * 1024


@dataclass(frozen=True)
class Visitor:
    """A signed-in person, and how they read: their language and time zone."""

    principal: Principal
    csrf_token: str
    language: str
    time_zone: str | None


def clock(request: Request) -> datetime:
    """Now, for sessions and sign-in limits; tests move time on by setting the app's
    ``state.web_clock`` to a callable."""
    moved = getattr(request.app.state, "web_clock", None)
    return moved() if callable(moved) else datetime.now(UTC)


def lifetimes(settings: Settings) -> sessions.Lifetimes:
    return sessions.Lifetimes(
        idle=timedelta(seconds=settings.node_web_session_idle_seconds),
        absolute=timedelta(seconds=settings.node_web_session_max_seconds),
    )


def language_of(request: Request) -> str:
    return i18n.chosen(request.cookies.get(i18n.COOKIE), request.headers.get("accept-language"))


async def signed_in(request: Request) -> Visitor:
    state: NodeState = request.app.state.node
    session_id = request.cookies.get(sessions.COOKIE)
    found = None
    if session_id:
        async with state.sessions() as db:
            found = await sessions.resume(db, session_id, clock(request), lifetimes(state.settings))
            await db.commit()
    if found is None:
        raise SignInNeeded(ended=bool(session_id))
    user = found.user
    note_caller(request.scope, Caller(user.name, user.organisation, user.role.value))
    if user.organisation not in state.keys.current:
        raise PageRefused(403, "organisation-not-served")
    return Visitor(
        Principal(user.name, user.organisation, user.role),
        found.session.csrf_secret,
        language_of(request),
        # The zone the user chose on the settings page, else their browser's at sign-in.
        i18n.known_zone(user.time_zone) or found.session.time_zone,
    )


async def audit_reader(visitor: Annotated[Visitor, Depends(signed_in)]) -> Visitor:
    if not visitor.principal.may_read_audit():
        raise PageRefused(403, "supervisors-only")
    return visitor


@dataclass(frozen=True)
class PostedForm:
    visitor: Visitor
    fields: dict[str, str]


async def checked_form(
    request: Request, visitor: Annotated[Visitor, Depends(signed_in)]
) -> PostedForm:
    """A form of the visitor's session: refused (403) without its CSRF token."""
    fields = await form_fields(request, _MAX_FORM)
    if not tokens_match(visitor.csrf_token, fields.get(CSRF_FIELD)):
        raise PageRefused(403, "csrf")
    return PostedForm(visitor, fields)


SignedIn = Annotated[Visitor, Depends(signed_in)]
AuditReader = Annotated[Visitor, Depends(audit_reader)]
Form = Annotated[PostedForm, Depends(checked_form)]

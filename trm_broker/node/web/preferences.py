"""The settings page: the language and time zone a user chose, kept with the user
(``node_users.language``, ``node_users.time_zone``) so they follow them to any browser.

Until a user chooses a zone, times are shown in their browser's zone read at sign-in
(UTC without JavaScript); a language chosen here is set as the language cookie at each
sign-in, and the switcher at the top of the pages still changes it for this browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from trm_broker.node import users
from trm_broker.node.web import i18n
from trm_broker.node.web.pages import render_page
from trm_broker.node.web.render import PREFIX
from trm_broker.node.web.sign_in import LANGUAGE_COOKIE_AGE
from trm_broker.node.web.visitor import Form, SignedIn, Visitor
from trm_broker.web.page_app import set_cookie

if TYPE_CHECKING:
    from trm_broker.node.app import NodeState

router = APIRouter(prefix=PREFIX, include_in_schema=False)
URL = PREFIX + "/settings"


async def _chosen(request: Request, visitor: Visitor) -> tuple[str | None, str | None]:
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        row = (
            await db.execute(
                select(users.NodeUser.language, users.NodeUser.time_zone).where(
                    users.NodeUser.name == visitor.principal.user
                )
            )
        ).first()
    return (row[0], row[1]) if row is not None else (None, None)


def _settings_page(
    request: Request,
    visitor: Visitor,
    *,
    language: str | None,
    time_zone: str | None,
    errors: dict[str, str] | None = None,
    saved: bool = False,
    status: int = 200,
) -> HTMLResponse:
    return render_page(
        request,
        visitor,
        "settings.html",
        status=status,
        chosen_language=language or "",
        chosen_zone=time_zone or "",
        zones=i18n.zone_names(),
        errors=errors or {},
        saved=saved,
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_form(request: Request, visitor: SignedIn) -> HTMLResponse:
    language, time_zone = await _chosen(request, visitor)
    saved = request.query_params.get("saved") == "1"
    return _settings_page(request, visitor, language=language, time_zone=time_zone, saved=saved)


@router.post("/settings", response_class=HTMLResponse)
async def save_settings(request: Request, form: Form) -> Response:
    visitor = form.visitor
    language = form.fields.get("language", "")
    zone = form.fields.get("time_zone", "")
    errors: dict[str, str] = {}
    gettext = i18n.translations(visitor.language).gettext
    if language and language not in i18n.languages():
        errors["language"] = gettext("Choose a language from the list.")
    if zone and (zone not in i18n.zone_names()):
        errors["time_zone"] = gettext("Choose a time zone from the list.")
    if errors:
        return _settings_page(
            request, visitor, language=language, time_zone=zone, errors=errors, status=400
        )
    state: NodeState = request.app.state.node
    async with state.sessions() as db:
        await users.set_preferences(db, visitor.principal.user, language or None, zone or None)
        await db.commit()
    response = RedirectResponse(URL + "?saved=1", status_code=303)
    if language:
        set_cookie(response, i18n.COOKIE, language, max_age=LANGUAGE_COOKIE_AGE)
    return response

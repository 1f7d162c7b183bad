"""The node's web app on the node's FastAPI app: its pages' routers, static files and
refusal page, under ``/web``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from trm_broker.node.web import consents, pages, preferences, return_pages, send, sign_in
from trm_broker.node.web.render import PREFIX, STATIC, page
from trm_broker.node.web.sessions import COOKIE
from trm_broker.node.web.visitor import language_of
from trm_broker.web.page_app import PageApp

#: The web app's paths that take a file, with the body each takes (the node's body limits).
UPLOADS = consents.UPLOADS


def _refusal(request: Request, status: int, reason: str) -> Response:
    return page(
        request, "refused.html", language=language_of(request), status=status, reason=reason
    )


WEB = PageApp(
    prefix=PREFIX,
    static=STATIC,
    static_dir=Path(__file__).parent / "static",
    name="web-static",
    session_cookie=COOKIE,
    refusal=_refusal,
)


def install(app: FastAPI) -> None:
    routers = (
        sign_in.router,
        pages.router,
        send.router,
        return_pages.router,
        preferences.router,
        consents.router,
    )
    WEB.install(app, routers)

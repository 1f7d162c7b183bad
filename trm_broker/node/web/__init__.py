"""The node's web app (issue 19): server-rendered pages for case workers, supervisors and
receiving organisations, over the same queries and access rules as the node's JSON API.

:func:`install` puts it on the node's app, under ``/web``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from trm_broker.node.web import pages, send, sign_in
from trm_broker.node.web.render import PREFIX, STATIC, page
from trm_broker.node.web.sessions import COOKIE
from trm_broker.node.web.visitor import PageRefused, SignInNeeded, language_of
from trm_broker.web.headers import PageHeaders


def install(app: FastAPI) -> None:
    app.include_router(sign_in.router)
    app.include_router(pages.router)
    app.include_router(send.router)
    app.mount(STATIC, StaticFiles(directory=Path(__file__).parent / "static"), name="web-static")
    app.add_middleware(PageHeaders, prefix=PREFIX, static=STATIC)

    @app.exception_handler(SignInNeeded)
    async def _sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        target = request.url.path if request.method == "GET" else PREFIX + "/"
        note = "&note=ended" if exc.ended else ""
        response = RedirectResponse(
            f"{PREFIX}/sign-in?next={quote(target, safe='/')}{note}", status_code=303
        )
        if exc.ended:
            sign_in.forget_cookie(response, COOKIE)
        return response

    @app.exception_handler(PageRefused)
    async def _refused(request: Request, exc: PageRefused) -> Response:
        return page(
            request,
            "refused.html",
            language=language_of(request),
            status=exc.status,
            reason=exc.reason,
        )

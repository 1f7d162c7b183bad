"""The auditors' console (issue 20): read-only pages at the broker's ``/console`` for
auditors (and operators), signed in with their registered key, whose ledger pages check
the ledger's proofs in the browser.

:func:`install` puts it on the broker's app.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from trm_broker.api.console import case_page, ledger_pages, overview, sign_in
from trm_broker.api.console.visitor import (
    COOKIE,
    PAGES,
    PREFIX,
    STATIC,
    PageRefused,
    SignInNeeded,
)
from trm_broker.web.headers import PageHeaders


def install(app: FastAPI) -> None:
    app.include_router(sign_in.router)
    app.include_router(ledger_pages.router)
    app.include_router(case_page.router)
    app.include_router(overview.router)
    app.mount(
        STATIC, StaticFiles(directory=Path(__file__).parent / "static"), name="console-static"
    )
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
        return PAGES.page(request, "refused.html", status=exc.status, reason=exc.reason)

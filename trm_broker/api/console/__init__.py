"""The auditors' console (issue 20): read-only pages at the broker's ``/console`` for
auditors (and operators), signed in with their registered key, whose ledger pages check
the ledger's proofs in the browser.

:func:`install` puts it on the broker's app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from trm_broker.api.console import case_page, ledger_pages, overview, sign_in
from trm_broker.api.console.visitor import COOKIE, PAGES, PREFIX, STATIC
from trm_broker.web.page_app import PageApp


def _refusal(request: Request, status: int, reason: str) -> Response:
    return PAGES.page(request, "refused.html", status=status, reason=reason)


CONSOLE = PageApp(
    prefix=PREFIX,
    static=STATIC,
    static_dir=Path(__file__).parent / "static",
    name="console-static",
    session_cookie=COOKIE,
    refusal=_refusal,
)


def install(app: FastAPI) -> None:
    routers = (sign_in.router, ledger_pages.router, case_page.router, overview.router)
    CONSOLE.install(app, routers)

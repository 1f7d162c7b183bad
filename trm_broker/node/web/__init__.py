"""The node's web app (issue 19): server-rendered pages for case workers, supervisors and
receiving organisations, over the same queries and access rules as the node's JSON API.

:func:`install` puts it on the node's app, under ``/web``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from trm_broker.node.web import consents, pages, preferences, return_pages, send, sign_in
from trm_broker.node.web.render import PREFIX, STATIC, page
from trm_broker.node.web.sessions import COOKIE
from trm_broker.node.web.visitor import PageRefused, SignInNeeded, language_of
from trm_broker.web.headers import PageHeaders

#: The web app's paths that take a file, with the body each takes (the node's body limits).
UPLOADS = consents.UPLOADS


def install(app: FastAPI) -> None:
    app.include_router(sign_in.router)
    app.include_router(pages.router)
    app.include_router(send.router)
    app.include_router(return_pages.router)
    app.include_router(preferences.router)
    app.include_router(consents.router)
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

    # Under /web a person reads the answer: an unknown or refused address is a page in
    # words with a way back, never the JSON API's problem+json (which the API keeps).
    json_answers: dict[type[Exception], Any] = {
        kind: app.exception_handlers[kind]
        for kind in (StarletteHTTPException, RequestValidationError)
        if kind in app.exception_handlers
    }

    async def _not_a_page(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path == PREFIX or path.startswith(PREFIX + "/"):
            status = exc.status_code if isinstance(exc, StarletteHTTPException) else 404
            response = page(
                request,
                "refused.html",
                language=language_of(request),
                status=status,
                reason="not-found" if status in (404, 405, 422) else "failed",
            )
            if isinstance(exc, StarletteHTTPException) and exc.headers:
                response.headers.update(exc.headers)
            return response
        answer = json_answers.get(type(exc)) or json_answers.get(StarletteHTTPException)
        if answer is None:  # pragma: no cover - the node installs its problem handlers first
            raise exc
        result = answer(request, exc)
        return cast(Response, await result if inspect.isawaitable(result) else result)

    app.add_exception_handler(StarletteHTTPException, _not_a_page)
    app.add_exception_handler(RequestValidationError, _not_a_page)

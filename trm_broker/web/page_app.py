"""What the node's web app and the broker's auditors' console share as page apps: their
refusals, their forms' CSRF check, and how they are put on a FastAPI app.

Each app has its own prefix, templates, catalogs and session store; both refuse the same
way: a visitor without a live session is sent to sign in, a refused page or an unknown
address is a page in words with a way back (never the JSON API's problem+json, which the
API keeps), and a form without its session's token is refused (OWASP CSRF Prevention Cheat
Sheet, "Synchronizer Token Pattern").
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from trm_broker.web.headers import PageHeaders

#: The form field of the CSRF token, in every form.
CSRF_FIELD = "csrf_token"


class SignInNeeded(Exception):
    """No live session: the visitor is sent to sign in (``ended``: theirs timed out)."""

    def __init__(self, *, ended: bool) -> None:
        super().__init__("sign in")
        self.ended = ended


class PageRefused(Exception):
    """A page or form refused; ``reason`` names the words the error page shows."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def form_fields(request: Request, limit: int = 16 * 1024) -> dict[str, str]:
    """The posted form (``application/x-www-form-urlencoded``), one value per field; a body
    over ``limit`` bytes is refused (413)."""
    body = await request.body()
    if len(body) > limit:
        raise PageRefused(413, "form-too-large")
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def tokens_match(expected: str, given: str | None) -> bool:
    """Whether a form's token is its session's (compared in constant time)."""
    return (
        bool(expected)
        and given is not None
        and hmac.compare_digest(expected.encode(), given.encode())
    )


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    """A page app's cookie: Secure, HttpOnly, SameSite=Strict, for the whole host."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def forget_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite="strict")


#: Renders the refusal page: (request, status, reason) -> the page.
RefusalPage = Callable[[Request, int, str], Response]


@dataclass(frozen=True)
class PageApp:
    """One page app: where it lives, its session cookie and how it shows a refusal."""

    prefix: str
    static: str
    static_dir: Path
    name: str
    session_cookie: str
    refusal: RefusalPage

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def install(self, app: FastAPI, routers: Iterable[APIRouter]) -> None:
        """Puts the app's routes, static files, security headers and refusals on ``app``."""
        for router in routers:
            app.include_router(router)
        # The app's own files, then the sheet both apps share (web/static/pages.css).
        shared: list[str | tuple[str, str]] = [("trm_broker.web", "static")]
        files = StaticFiles(directory=self.static_dir, packages=shared)
        app.mount(self.static, files, name=self.name)
        app.add_middleware(PageHeaders, prefix=self.prefix, static=self.static)
        app.add_exception_handler(SignInNeeded, self._sign_in_needed)  # type: ignore[arg-type]
        app.add_exception_handler(PageRefused, self._refused)  # type: ignore[arg-type]
        # Keep the app's own answers (the API's problem+json, installed before the pages)
        # for every other address.
        others: dict[type[Exception], Any] = {
            kind: app.exception_handlers[kind]
            for kind in (StarletteHTTPException, RequestValidationError)
            if kind in app.exception_handlers
        }
        fallback = others[StarletteHTTPException]

        async def not_a_page(request: Request, exc: Exception) -> Response:
            if self.owns(request.url.path):
                return self._not_found(request, exc)
            result = others.get(type(exc), fallback)(request, exc)
            return cast(Response, await result if inspect.isawaitable(result) else result)

        app.add_exception_handler(StarletteHTTPException, not_a_page)
        app.add_exception_handler(RequestValidationError, not_a_page)

    async def _sign_in_needed(self, request: Request, exc: SignInNeeded) -> Response:
        target = request.url.path if request.method == "GET" else self.prefix + "/"
        note = "&note=ended" if exc.ended else ""
        response = RedirectResponse(
            f"{self.prefix}/sign-in?next={quote(target, safe='/')}{note}", status_code=303
        )
        if exc.ended:
            forget_cookie(response, self.session_cookie)
        return response

    async def _refused(self, request: Request, exc: PageRefused) -> Response:
        return self.refusal(request, exc.status, exc.reason)

    def _not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 404
        reason = "not-found" if status in (404, 405, 422) else "failed"
        response = self.refusal(request, status, reason)
        if isinstance(exc, StarletteHTTPException) and exc.headers:
            response.headers.update(exc.headers)
        return response

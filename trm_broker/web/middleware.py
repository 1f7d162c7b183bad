"""Request ids, one log line per request, and a last-resort 500 that leaks nothing.

Plain ASGI middleware: it wraps ``send`` to learn the status and add ``x-request-id``, and
runs the app in the request's own task (no extra task or stream per request, as Starlette's
``BaseHTTPMiddleware`` would add)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trm_broker.logs import request_context
from trm_broker.web.problems import internal_error, log_internal_error, problem_response

#: A caller's request id is kept only if it cannot carry words (a name): hex, or a UUID.
_SAFE_REQUEST_ID = re.compile(r"^(?:[0-9a-f]{16,64}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})$")
log = structlog.get_logger("trm_broker.http")


#: Told of each request when it is answered: method, route template (``unmatched`` when no
#: route matched, never the raw path), status and seconds taken.
RequestObserver = Callable[[str, str, int, float], None]


def _incoming_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            incoming = value.decode("latin-1")
            return incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestContext:
    """Binds a request id to every line logged while a request is handled, answers it in
    ``x-request-id``, logs one ``request`` line (method, route template, status, duration)
    and tells ``observe``; a bug that escapes every handler becomes a problem+json 500."""

    def __init__(self, app: ASGIApp, observe: RequestObserver | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope)
        header = (b"x-request-id", request_id.encode("ascii"))
        status = 500
        started_response = False

        async def sending(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with request_context(request_id) as ids:
            started = time.perf_counter()
            try:
                await self.app(scope, receive, sending)
            except Exception as exc:
                log_internal_error(exc)
                if started_response:
                    raise  # the answer is half sent: the server closes the connection
                status = 500
                response = problem_response(internal_error(), Request(scope))
                await response(scope, receive, sending)
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            log.info(
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 1),
                **ids,
            )
            if self.observe is not None:
                self.observe(scope["method"], route, status, seconds)


def install(app: FastAPI, *, observe: RequestObserver | None = None) -> None:
    app.add_middleware(RequestContext, observe=observe)

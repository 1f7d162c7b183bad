"""Request ids, one log line per request, and a last-resort 500 that leaks nothing."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request, Response

from trm_broker.logs import request_context
from trm_broker.web.problems import internal_error, log_internal_error, problem_response

#: A caller's request id is kept only if it cannot carry words (a name): hex, or a UUID.
_SAFE_REQUEST_ID = re.compile(r"^(?:[0-9a-f]{16,64}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})$")
log = structlog.get_logger("trm_broker.http")


#: Told of each request when it is answered: method, route template (``unmatched`` when no
#: route matched, never the raw path), status and seconds taken.
RequestObserver = Callable[[str, str, int, float], None]


def install(app: FastAPI, *, observe: RequestObserver | None = None) -> None:
    @app.middleware("http")
    async def _request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        with request_context(request_id) as ids:
            started = time.perf_counter()
            try:
                response = await call_next(request)
            except Exception as exc:
                log_internal_error(exc)
                response = problem_response(internal_error(), request)
            seconds = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", "unmatched")
            log.info(
                "request",
                method=request.method,
                route=route,
                status=response.status_code,
                duration_ms=round(seconds * 1000, 1),
                **ids,
            )
            if observe is not None:
                observe(request.method, route, response.status_code, seconds)
        response.headers["x-request-id"] = request_id
        return response

"""The rate limit of whatever is not authenticated as a participant, per client address.

Every request to the broker spends one token, and none escapes:

- a route that authenticates its caller (its dependencies include
  :func:`~trm_broker.api.auth.signed_caller`, read from the route itself) is charged
  there: the participant on success, the address on refusal;
- every other route (public reads; a signature header on a route that does not check it
  changes nothing) spends a token of the address's bucket, in an app-wide dependency that
  runs before the route's own;
- a path or method that matches no route spends one as its 404 or 405 is answered.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from trm_broker.api.auth import signed_caller
from trm_broker.api.deps import BrokerState
from trm_broker.api.rate_limits import CHARGED, AuthenticatedRoutes
from trm_broker.web.problems import RateLimited, problem_response

_AUTHENTICATED = AuthenticatedRoutes(signed_caller)


def _charge(request: Request) -> None:
    state: BrokerState | None = getattr(request.app.state, "broker", None)
    request.scope[CHARGED] = True
    if state is not None:  # None: the app is not started (its routes cannot answer either)
        state.rate_limits.charge_address(request)


async def limit_unauthenticated(request: Request) -> None:
    """App-wide dependency: a route that does not authenticate spends the address's token."""
    if request.scope.get("route") not in _AUTHENTICATED:
        _charge(request)


#: For ``FastAPI(dependencies=...)``: app-wide dependencies apply to every route.
DEPENDENCY: Any = Depends(limit_unauthenticated)


def install(app: FastAPI) -> None:
    """Charge what no route handled (404, 405) before the problem's usual answer."""
    answer = app.exception_handlers[StarletteHTTPException]

    async def _unhandled(request: Request, exc: Exception) -> Response:
        if not request.scope.get(CHARGED):
            try:
                _charge(request)
            except RateLimited as problem:
                return problem_response(problem, request)
        response = answer(request, exc)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(StarletteHTTPException, _unhandled)

"""Request rate limits (TRM_RATE_*): per participant once a request's signature verifies,
per client address for everything else.

Every request spends a token from one bucket, and no route can opt out: an app-wide
dependency charges the address of each request to a route that does not authenticate its
caller, and :func:`trm_broker.api.auth.signed_caller` charges the participant on success,
the address on refusal. An honest participant is never slowed down by someone else's
traffic from the same address (a proxy, a NAT): signed requests that verify spend only
their own participant's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.routing import BaseRoute

from trm_broker.settings import Settings
from trm_broker.web.problems import RateLimited
from trm_broker.web.rate_limit import RateLimiter

#: Set in a request's scope once it has spent its token (so it spends only one).
CHARGED = "trm.rate_limit_charged"


@dataclass
class RateLimits:
    participants: RateLimiter
    addresses: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            participants=RateLimiter(settings.rate_per_second, settings.rate_burst),
            addresses=RateLimiter(settings.address_rate_per_second, settings.address_rate_burst),
        )

    def charge_participant(self, participant_id: str) -> None:
        wait = self.participants.take(participant_id)
        if wait is not None:
            raise RateLimited(
                "Too many requests from this participant; retry after the time given in "
                "Retry-After.",
                wait,
            )

    def refuse_if_exhausted(self, participant_id: str) -> None:
        """429 if the participant has no token left, without spending one (a request not
        verified yet may name anyone)."""
        wait = self.participants.wait(participant_id)
        if wait is not None:
            raise RateLimited(
                "Too many requests from this participant; retry after the time given in "
                "Retry-After.",
                wait,
            )

    def charge_address(self, request: Request) -> None:
        wait = self.addresses.take(client_address(request))
        if wait is not None:
            raise RateLimited(
                "Too many unauthenticated or refused requests from this address; retry after "
                "the time given in Retry-After.",
                wait,
            )


def client_address(request: Request) -> str:
    """The caller's address (behind a trusted proxy, uvicorn puts the forwarded one here)."""
    return request.client.host if request.client else "unknown"


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    calls: set[Callable[..., Any]] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            calls.add(sub.call)
        calls |= _calls(sub)
    return calls


class AuthenticatedRoutes:
    """Which routes authenticate their caller with ``authenticate`` (read from each route's
    own dependency tree, so a route cannot be misfiled by hand)."""

    def __init__(self, authenticate: Callable[..., Any]) -> None:
        self.authenticate = authenticate
        self._known: dict[int, bool] = {}

    def __contains__(self, route: BaseRoute | None) -> bool:
        if route is None:
            return False
        known = self._known.get(id(route))
        if known is None:
            dependant = getattr(route, "dependant", None)
            known = dependant is not None and self.authenticate in _calls(dependant)
            self._known[id(route)] = known
        return known

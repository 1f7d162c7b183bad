"""Failed sign-ins (the web app's form and the JSON API's `POST /login` alike: one password,
one budget of guesses), counted per user name and per address: too many in a window and
sign-in is refused for a while, so a password cannot be guessed at speed (OWASP Authentication
Cheat Sheet, "Protect against automated attacks"). Kept in the node's memory: a restart
forgets them, which only ever helps a person locked out by mistake."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: Failures counted over this window …
WINDOW = timedelta(minutes=15)
#: … of one user name (whoever tries it), and of one address (whichever names it tries).
PER_USER = 5
PER_ADDRESS = 20
_MAX_KEYS = 10_000  # bounded memory against a flood of made-up names


@dataclass
class SignInThrottle:
    _failures: dict[str, deque[datetime]] = field(default_factory=dict)

    def wait(self, user: str, address: str, now: datetime) -> timedelta | None:
        """How long sign-in stays refused for this user or address; None: it is not."""
        waits = [
            self._wait(f"user:{user}", PER_USER, now),
            self._wait(f"addr:{address}", PER_ADDRESS, now),
        ]
        longest = max((w for w in waits if w is not None), default=None)
        return longest

    def failed(self, user: str, address: str, now: datetime) -> None:
        if len(self._failures) > _MAX_KEYS:
            self._failures.clear()
        for key in (f"user:{user}", f"addr:{address}"):
            self._failures.setdefault(key, deque(maxlen=PER_ADDRESS)).append(now)

    def succeeded(self, user: str) -> None:
        self._failures.pop(f"user:{user}", None)

    def _wait(self, key: str, limit: int, now: datetime) -> timedelta | None:
        times = self._failures.get(key)
        if not times:
            return None
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) < limit:
            return None
        return times[-limit] + WINDOW - now


def of(app_state: Any) -> SignInThrottle:
    """The node's one throttle, kept on its app's state."""
    found: SignInThrottle | None = getattr(app_state, "sign_in_throttle", None)
    if found is None:
        found = app_state.sign_in_throttle = SignInThrottle()
    return found

"""Token buckets: how many requests one caller may make, per second and at once.

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request spends
one. The buckets live in the process (each broker replica limits on its own) and are
bounded in number, so a flood of new callers cannot grow memory: the least recently seen
bucket is dropped first (it comes back full, which only ever favours the caller).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """``take(key)`` spends a token of ``key``'s bucket, or says how long until one is back."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be >= 0, burst and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def take(self, key: str) -> float | None:
        """Spend one token: ``None`` if there was one, else the seconds until there is."""
        if not self.enabled:
            return None
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens >= 1:
            self._store(key, tokens - 1, now)
            return None
        self._store(key, tokens, now)
        return (1 - tokens) / self.rate

    def wait(self, key: str) -> float | None:
        """Like :meth:`take`, without spending: ``None`` if a request would be allowed."""
        if not self.enabled:
            return None
        tokens = self._tokens(key, self._clock())
        return None if tokens >= 1 else (1 - tokens) / self.rate

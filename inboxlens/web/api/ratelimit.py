"""Token buckets for the REST API: a steady rate per key, with a burst allowance.

Each key (an API token, or a session for the dashboard's own calls) has a bucket of
``burst`` tokens refilled at ``per_minute / 60`` a second; a request takes one or is
refused with how long to wait. Memory stays bounded: a bucket that has refilled
completely is the same as no bucket and is dropped, and past ``max_keys`` the least
recently used bucket goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

DEFAULT_MAX_KEYS = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, at)

    def take(self, key: str) -> float:
        """0 if the request may go ahead (one token taken), else the seconds until it may."""
        now = self.clock()
        tokens = self._level(key, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            self._evict(now)
            return 0.0
        return (1.0 - tokens) / self.rate

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def _evict(self, now: float) -> None:
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        # Least recently used first, stopping at the first one still refilling: O(1) amortised.
        while self._buckets:
            key = next(iter(self._buckets))
            if self._level(key, now) < self.burst:
                break
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

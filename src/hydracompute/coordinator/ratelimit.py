"""Token buckets per credential: a steady rate with a burst allowance."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from hydracompute.errors import TooManyRequests

#: Buckets kept at most; the least recently used are forgotten beyond this.
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Allows ``rate_per_s`` requests per second per key, with bursts up to ``burst``.

    Args:
        clock: a monotonic clock in seconds; injectable for tests.
    """

    def __init__(
        self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> None:
        """Raise like :meth:`take` if ``key`` has nothing left, without spending anything.

        Raises:
            TooManyRequests: none is left.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        tokens = min(
            self.burst, bucket.tokens + (self.clock() - bucket.updated_s) * self.rate_per_s
        )
        if tokens < 1:
            wait = (1 - tokens) / self.rate_per_s
            raise TooManyRequests(
                f"too many failed attempts; retry in {max(wait, 0.01):.2f} s",
                retry_after_s=math.ceil(wait),
            )

    def take(self, key: str) -> None:
        """Spend one request of ``key``'s allowance.

        Raises:
            TooManyRequests: none is left; ``extra["retry_after_s"]`` says when one will be.
        """
        now = self.clock()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated_s) * self.rate_per_s)
        bucket.updated_s = now
        self._buckets[key] = bucket  # re-inserted last: dict order is recency
        if len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / self.rate_per_s
            raise TooManyRequests(
                f"rate limit of {self.rate_per_s:g} requests/s exceeded; retry in {wait:.2f} s",
                retry_after_s=math.ceil(wait),
            )
        bucket.tokens -= 1

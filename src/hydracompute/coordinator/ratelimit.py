"""Token buckets per credential: a steady rate with a burst allowance.

:class:`RateLimiter` counts in this coordinator's memory: the allowance per API key and per
worker is per coordinator, so a pool of N coordinators allows at most N times it (a known
bound; a worker talks to one coordinator at a time). :class:`FailureLimit` counts failed
sign-ins for the whole pool, in the store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hydracompute.errors import TooManyRequests
from hydracompute.store import Store

T = TypeVar("T")

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


class FailureLimit:
    """Failed sign-ins per address, counted for the whole pool: in one token bucket per
    address kept in the store, which every coordinator sharing it reads and spends, so that
    guessing keys through several coordinators is throttled as through one.

    An address known here to be refused is refused without a store call
    (:meth:`check_here`); the shared bucket is checked in the same store-thread call as the
    lookup it guards (:meth:`guarded`), and spent only when a check fails (:meth:`spend`).
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s, self.burst = rate_per_s, burst
        #: address key -> until when (store clock) it is refused, as this coordinator saw.
        self._refused: dict[str, float] = {}

    def check_here(self, key: str, now: float) -> None:
        """Refuse ``key`` if this coordinator saw its bucket empty and it has not refilled.

        Raises:
            TooManyRequests: refused.
        """
        until = self._refused.get(key)
        if until is None:
            return
        if now >= until:
            self._refused.pop(key, None)
            return
        raise TooManyRequests(
            f"too many failed attempts; retry in {max(until - now, 0.01):.2f} s",
            retry_after_s=math.ceil(until - now),
        )

    def guarded(self, store: Store, key: str, now: float, fn: Callable[..., T], *args: Any) -> T:
        """On the store thread: refuse ``key`` if the pool's bucket for it is empty, else
        ``fn(*args)``.

        Raises:
            TooManyRequests: refused.
        """
        try:
            store.sharing.check_bucket(key, now, self.rate_per_s, self.burst)
        except TooManyRequests as exc:
            self._refuse(key, now, float(exc.extra.get("retry_after_s", 1)))  # type: ignore[arg-type]
            raise
        return fn(*args)

    def spend(self, store: Store, key: str, now: float) -> None:
        """On the store thread: a check by ``key`` failed; spend one of its tokens."""
        tokens = store.sharing.spend(key, now, self.rate_per_s, self.burst)
        if tokens < 1:
            self._refuse(key, now, (1 - tokens) / self.rate_per_s)

    def _refuse(self, key: str, now: float, for_s: float) -> None:
        self._refused.pop(key, None)
        self._refused[key] = now + for_s  # last: dict order is recency
        if len(self._refused) > MAX_BUCKETS:
            del self._refused[next(iter(self._refused))]

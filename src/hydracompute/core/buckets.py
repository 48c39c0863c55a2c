"""Token buckets as plain arithmetic: a steady rate with a burst allowance, clock passed in.

A bucket holds at most ``burst`` tokens and gains ``rate_per_s`` per second; a request
spends one. Kept in memory by the coordinator's rate limits and in the store for the
counters several coordinators share.
"""

from __future__ import annotations

import math


def refill(tokens: float, updated_s: float, now: float, rate_per_s: float, burst: float) -> float:
    """The tokens of a bucket that had ``tokens`` at ``updated_s``, at ``now``."""
    return min(burst, tokens + max(0.0, now - updated_s) * rate_per_s)


def wait_s(tokens: float, rate_per_s: float) -> float:
    """Seconds until a bucket holding ``tokens`` (< 1) has one to spend."""
    return max(0.0, (1 - tokens) / rate_per_s)


def retry_after_s(tokens: float, rate_per_s: float) -> int:
    """Whole seconds to put in a Retry-After header (at least 1)."""
    return max(1, math.ceil(wait_s(tokens, rate_per_s)))

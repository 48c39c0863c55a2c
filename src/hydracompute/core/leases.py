"""Lease timing: deadlines, expiry and backup copies for stragglers."""

from __future__ import annotations

from hydracompute.core.models import Lease, LeaseState


def is_expired(lease: Lease, now: float) -> bool:
    """An active lease whose holder has not renewed it before its deadline."""
    return lease.state is LeaseState.ACTIVE and lease.deadline_s < now


#: Leases a worker may hold per core it declared: the chunk it computes, and the one whose
#: result is on its way while the next computes (no more: no hoarding).
LEASES_PER_CORE = 2

#: However slow a holder claims to be, a chunk is expected to take at most this many times
#: the target: chunks are sized to the target, so a longer wait only helps a liar.
MAX_EXPECTED_TARGETS = 10.0


def expected_duration_s(units: float, holder_speed: float | None, target_s: float) -> float:
    """How long the holder should take for a chunk of ``units`` (its cost, in the units its
    speed counts: see :mod:`hydracompute.kinds.costs`); the target if unknown."""
    if not holder_speed:
        return target_s
    return min(units / holder_speed, MAX_EXPECTED_TARGETS * target_s)


def wants_backup(
    lease: Lease,
    units: float,
    holder_speed: float | None,
    target_s: float,
    factor: float,
    now: float,
) -> bool:
    """Whether a lease has run so much longer than expected that a copy should start.

    Only asked about the single active lease of a chunk, once a job has no unleased work:
    the first valid result of the two wins.
    """
    expected = expected_duration_s(units, holder_speed, target_s)
    return lease.state is LeaseState.ACTIVE and now - lease.issued_s > factor * expected

"""Lease timing: deadlines, expiry and backup copies for stragglers."""

from __future__ import annotations

import math

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
    taker_speed: float | None = None,
    holder_paused: bool = False,
) -> bool:
    """Whether a copy of a leased chunk should start on the worker asking for work.

    Only asked about the single active lease of a chunk, once a job has no unleased work,
    on behalf of a worker with nothing else to do: the first valid result of the two wins.
    A copy starts when the lease has run ``factor`` times longer than its holder was
    expected to take, or before that when the holder is paused by its owner (it computes
    nothing until it resumes, which may be never), or when the asking worker, of speed
    ``taker_speed`` (``None``: unknown), would finish its copy ``factor`` times sooner than
    the holder is expected to finish its own: at the end of a job, an idle fast core is
    better spent racing a slow one than waiting for it.
    """
    if lease.state is not LeaseState.ACTIVE:
        return False
    expected = expected_duration_s(units, holder_speed, target_s)
    if holder_paused or now - lease.issued_s > factor * expected:
        return True
    if not taker_speed:
        return False
    holder_left_s = lease.issued_s + expected - now
    return holder_left_s > factor * units / taker_speed


def expected_end_s(
    lease: Lease,
    units: float,
    holder_speed: float | None,
    target_s: float,
    factor: float,
    now: float,
    holder_paused: bool = False,
) -> float:
    """When a lease's holder is expected to finish its chunk: infinite if it is paused or
    already late (it may never finish). Backup copies go to the chunks that would end
    last first."""
    expected = expected_duration_s(units, holder_speed, target_s)
    if holder_paused or now - lease.issued_s > factor * expected:
        return math.inf
    return lease.issued_s + expected

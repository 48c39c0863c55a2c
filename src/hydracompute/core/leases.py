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
    race: bool = True,
) -> bool:
    """Whether a copy of a leased chunk should start on the worker asking for work.

    Only asked about the single active lease of a chunk, once a job has no unleased work,
    on behalf of a worker with nothing else to do: the first valid result of the two wins.

    The holder is a straggler once its lease has run ``factor`` times longer than it was
    expected to take, or as soon as its owner paused it (it computes nothing until it
    resumes, which may be never). A straggler's chunk gets a copy from a worker that would
    compute it in at most ``factor`` targets, not from a slower one: the chunk was sized
    for its first holder, and a copy on a worker four times slower would make the job's
    tail in its turn (it waits instead until the lease expires or is given back, and is
    then cut to fit; see :func:`hydracompute.core.sizing.split_units`). With ``race``, a
    copy also starts when the asking worker would finish it ``factor`` times sooner than
    the holder is expected to finish its own: at the end of a job, an idle fast core is
    better spent racing a slow one than waiting for it. ``taker_speed`` ``None``: the
    asking worker's speed is unknown (a copy takes it one target).
    """
    if lease.state is not LeaseState.ACTIVE:
        return False
    expected = expected_duration_s(units, holder_speed, target_s)
    taker_s = expected_duration_s(units, taker_speed, target_s)
    if holder_paused or now - lease.issued_s > factor * expected:
        return taker_s <= factor * target_s
    holder_left_s = lease.issued_s + expected - now
    return race and taker_speed is not None and holder_left_s > factor * taker_s


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


#: A holder that has not renewed its lease for this many heartbeats has missed its renewal
#: (an agent renews every 0.8 heartbeat while it computes) and is likely gone; its lease
#: expires only after three. At a job's tail its chunk is taken back sooner.
SILENT_HEARTBEATS = 1.5


def stalled(
    lease: Lease, now: float, heartbeat_s: float, ttl_s: float, holder_paused: bool = False
) -> bool:
    """Whether an active lease's holder is not computing it: paused by its owner, or silent
    for :data:`SILENT_HEARTBEATS` (``ttl_s``: how long a renewal extends a lease)."""
    renewed_s = lease.deadline_s - ttl_s
    silent = now - renewed_s > SILENT_HEARTBEATS * heartbeat_s
    return lease.state is LeaseState.ACTIVE and (holder_paused or silent)

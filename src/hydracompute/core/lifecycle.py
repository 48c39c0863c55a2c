"""The life cycle of a chunk and its copies: events in, decisions out.

A chunk is carved from a job, handed out as leases (copies) to workers, and ends *done*
(an output accepted) or failing its job. Each function here takes the chunk's record and an
event — an output reported, an error reported, a lease lapsed (expired or given back), a
worker barred, a spot check answered — changes the chunk's own fields, and returns the
decisions whose effects lie outside the chunk: store an output, end leases, change a
worker's trust, bar a worker, fail or finish the job. :mod:`hydracompute.store.exchange`
applies them through the backend's primitives.

Nothing here reads a clock, a database or a random source: times and draws are arguments,
so every path can be tested exactly and replayed by a simulator.

States of a chunk::

    pending --grant--> leased --output--> done
       ^                 |  \\--copies disagree / need verification--> pending (more copies)
       +---lapse/error---+

A pending chunk that no copy was ever reported for can be split when it is re-issued
(:func:`split`): it ends *done* with no output, ``wanted`` 0, and two new chunks cover its
units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydracompute.core.models import JSON, Chunk, ChunkState
from hydracompute.core.verification import VerificationPolicy, agreeing_groups, max_copies

Same = Callable[[JSON, JSON], bool]
#: A chunk whose copies still disagree at ``max_copies`` is disputed; at this many times
#: that, it fails its job.
DISPUTE_FACTOR = 2


@dataclass(frozen=True)
class Copy:
    """One reported output of a chunk."""

    lease_id: str
    worker_id: str
    output: JSON


@dataclass(frozen=True)
class Terms:
    """What the chunk's job asks of verification."""

    replication: int = 1
    quorum: int = 1
    adaptive: bool = False


# Decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """Store ``winner``'s output as the chunk's; the copies in ``agreeing`` are done, those
    in ``outvoted`` invalid. ``unverified_by`` names the worker whose output is accepted
    alone under adaptive verification ("" otherwise)."""

    winner: Copy
    agreeing: tuple[Copy, ...]
    outvoted: tuple[Copy, ...] = ()
    unverified_by: str = ""


@dataclass(frozen=True)
class Hold:
    """Keep ``copy`` as a candidate until enough copies agree."""

    copy: Copy


@dataclass(frozen=True)
class Confirm:
    """These workers' outputs were confirmed: one more to their trust on the job's kind."""

    worker_ids: tuple[str, ...]


@dataclass(frozen=True)
class Bar:
    """The worker returned a wrong output: bar it, re-do its unverified outputs."""

    worker_id: str
    reason: str


@dataclass(frozen=True)
class FailJob:
    reason: str


@dataclass(frozen=True)
class Released:
    """The chunk wants another copy: work is available to other workers."""


Decision = Accept | Hold | Confirm | Bar | FailJob | Released


# Transitions ----------------------------------------------------------------------------


def tracked(chunk: Chunk) -> bool:
    """Whether the chunk keeps its holders: only a chunk that wants several copies does.
    Most chunks want one, and keeping their holder would cost every exchange a write and a
    read of it; their copies in play are counted from the active leases instead."""
    return chunk.wanted > 1


def settle_state(chunk: Chunk, active_copies: int = 0) -> bool:
    """Put an unfinished chunk in the state its copies call for; returns whether it became
    pending (wanting another copy) from leased. ``active_copies``: the copies still
    computing, for a chunk that does not keep its holders (see :func:`tracked`)."""
    if chunk.state is ChunkState.DONE:
        return False
    in_play = len(chunk.holders) if tracked(chunk) else active_copies
    wants_copy = in_play < chunk.wanted
    became_pending = wants_copy and chunk.state is ChunkState.LEASED
    chunk.state = ChunkState.PENDING if wants_copy else ChunkState.LEASED
    return became_pending


def may_hold_copy(
    chunk: Chunk,
    worker_id: str,
    token_id: str,
    distinct_tokens: bool,
    confirmed: bool = True,
) -> bool:
    """Whether a worker may be given a copy of ``chunk``: never two copies to one worker,
    copies of a chunk to workers of different join tokens (volunteers) while the pool has
    workers of more than one (``distinct_tokens``), and copies of a disputed chunk only to
    workers with an output confirmed by others (``confirmed``). Only a chunk that keeps its
    holders (see :func:`tracked`) can refuse a worker for the first two."""
    if worker_id in chunk.holders or (chunk.disputed and not confirmed):
        return False
    return not (distinct_tokens and token_id in chunk.holders.values())


def granted(chunk: Chunk, worker_id: str, token_id: str) -> None:
    """A copy of ``chunk`` was leased to a worker."""
    if tracked(chunk):
        chunk.holders[worker_id] = token_id
        settle_state(chunk)
    else:
        chunk.state = ChunkState.LEASED


def lapsed(chunk: Chunk, worker_id: str, active_copies: int = 0) -> list[Decision]:
    """A worker's copy ended without an output (expired, given back, abandoned).

    ``active_copies``: the other copies still computing (read only for a chunk that does
    not keep its holders).
    """
    chunk.holders.pop(worker_id, None)
    return [Released()] if settle_state(chunk, active_copies) else []


def errored(
    chunk: Chunk,
    worker_id: str,
    error: str,
    now: float,
    max_failures: int,
    active_copies: int = 0,
) -> list[Decision]:
    """A worker reported that computing its copy failed with ``error``.

    The worker waits before retrying the chunk (``failed_by``); ``max_failures`` failures
    of one chunk fail its job. ``active_copies`` as for :func:`lapsed`.
    """
    chunk.holders.pop(worker_id, None)
    if chunk.state is ChunkState.DONE:
        return []
    chunk.failures += 1
    chunk.last_error = error
    chunk.failed_by[worker_id] = now
    if chunk.failures >= max_failures:
        return [
            FailJob(
                f"chunk {chunk.index} (units {chunk.start}-{chunk.stop}) failed "
                f"{chunk.failures} times; last error: {error}"
            )
        ]
    return [Released()] if settle_state(chunk, active_copies) else []


def reported(
    chunk: Chunk,
    held: Sequence[Copy],
    copy: Copy,
    terms: Terms,
    policy: VerificationPolicy,
    reporter_trust: int,
    draw: float,
    same: Same,
    reporter_token: str = "",
) -> list[Decision]:
    """A worker reported a (checked) output for its copy of an unfinished chunk.

    Args:
        held: the outputs already reported for the chunk and waiting for agreement.
        reporter_trust: the reporter's confirmed outputs in a row on the job's kind.
        reporter_token: the join token the reporter enrolled with (a chunk that starts
            keeping its holders here starts with the reporter).
        draw: a uniform number in [0, 1) drawn for this report (adaptive acceptance).
        same: the kind's comparison of two outputs of this chunk.
    """
    if not held and chunk.quorum == 1:
        if not terms.adaptive:
            return _accept(chunk, Accept(copy, (copy,)))
        if draw >= policy.replicate_probability(reporter_trust):
            return _accept(chunk, Accept(copy, (copy,), unverified_by=copy.worker_id))
        # Verify it: another copy, from another worker, must agree.
        chunk.quorum, chunk.wanted = 2, max(chunk.wanted, 2)
        chunk.holders[copy.worker_id] = reporter_token
    if tracked(chunk):
        # A copy reported after its lease lapsed (expired, given back) comes from a worker
        # no longer among the holders: it is one again, or the chunk could go back to it
        # and its two copies agree with each other.
        chunk.holders.setdefault(copy.worker_id, reporter_token)
    copies = [*held, copy]
    groups = agreeing_groups(copies, lambda c: c.output, same)
    if len(groups[0]) >= chunk.quorum:
        winners = groups[0]
        losers = tuple(c for group in groups[1:] for c in group)
        return _accept(chunk, Accept(winners[0], tuple(winners), losers))
    limit = max_copies(max(terms.replication, 2), chunk.quorum)
    if len(copies) >= DISPUTE_FACTOR * limit:
        return [
            FailJob(
                f"chunk {chunk.index} (units {chunk.start}-{chunk.stop}): {len(copies)} copies "
                f"from different workers disagree, and no {chunk.quorum} of them agree"
            )
        ]
    # Past the bound, the chunk is disputed: its next copies go only to workers whose
    # outputs others have confirmed (a liar telling its own lie never is).
    chunk.disputed = chunk.disputed or len(copies) >= limit
    # Enough copies in play for the largest group to reach the quorum if the rest agree.
    needed = len(copies) + chunk.quorum - len(groups[0])
    chunk.wanted = min(DISPUTE_FACTOR * limit, max(chunk.wanted, needed))
    chunk.reported = len(copies)
    settle_state(chunk)
    return [Hold(copy), Released()] if chunk.state is ChunkState.PENDING else [Hold(copy)]


def _accept(chunk: Chunk, accept: Accept) -> list[Decision]:
    chunk.state = ChunkState.DONE
    chunk.disputed = False
    chunk.reported = 0
    chunk.holders.clear()
    chunk.verified = len(accept.agreeing) >= 2
    chunk.unverified_by = accept.unverified_by
    decisions: list[Decision] = [accept]
    if chunk.verified:
        decisions.append(Confirm(tuple(c.worker_id for c in accept.agreeing)))
    decisions.extend(
        Bar(c.worker_id, f"{_where(chunk)} disagreed with the copies of other workers")
        for c in accept.outvoted
    )
    return decisions


def _where(chunk: Chunk) -> str:
    return f"its output for chunk {chunk.index} of job {chunk.job_id}"


def checked_against_known(known: JSON, copy: Copy, same: Same, chunk: Chunk) -> list[Decision]:
    """A worker reported an output for a chunk whose verified output is known: a spot
    check, or a copy that came after other workers' copies agreed."""
    if same(known, copy.output):
        return [Confirm((copy.worker_id,))]
    return [Bar(copy.worker_id, f"{_where(chunk)} differs from the verified one")]


def splittable(chunk: Chunk) -> bool:
    """Whether a pending chunk may be cut in two: no copy of it is in play or reported
    (so no copies of different ranges are ever compared), it never failed (a chunk that
    fails is not made to look new), and no output of it was accepted, verified or
    disputed."""
    return (
        chunk.state is ChunkState.PENDING
        and not chunk.holders
        and chunk.reported == 0
        and chunk.failures == 0
        and not chunk.disputed
        and not chunk.verified
        and not chunk.unverified_by
        and chunk.wanted > 0
        and chunk.stop - chunk.start > 1
    )


def split(chunk: Chunk, at: int, first_index: int) -> tuple[Chunk, Chunk]:
    """Cut a :func:`splittable` chunk at unit ``at``; returns the new chunks ``[start,
    at)`` and ``[at, stop)``, indexed ``first_index`` and the next, pending and asking
    for the copies the chunk asked for.

    The chunk itself is retired: *done* with ``wanted`` 0 and no output. Its range stays,
    so that a late output of one of its lapsed leases still passes its kind's check, and
    is then superseded, as any copy arriving after its chunk is done: an output for the
    whole range never counts for a part of it.
    """
    if not chunk.start < at < chunk.stop:
        raise ValueError(f"cannot split units {chunk.start}-{chunk.stop} at {at}")
    parts = tuple(
        Chunk(
            chunk.job_id,
            first_index + i,
            start,
            stop,
            quorum=chunk.quorum,
            wanted=chunk.wanted,
        )
        for i, (start, stop) in enumerate(((chunk.start, at), (at, chunk.stop)))
    )
    chunk.state = ChunkState.DONE
    chunk.wanted = 0
    return parts[0], parts[1]


def retired(chunk: Chunk) -> bool:
    """Whether the chunk was split (see :func:`split`): done, with no output of its own."""
    return chunk.state is ChunkState.DONE and chunk.wanted == 0


def reopened(chunk: Chunk, quorum: int) -> None:
    """An accepted output came from a worker since found lying: compute the chunk again,
    verified this time (``quorum`` copies of other workers must agree)."""
    chunk.state = ChunkState.PENDING
    chunk.quorum = chunk.wanted = max(2, quorum)
    chunk.holders.clear()
    chunk.reported = 0
    chunk.verified = False
    chunk.disputed = False
    chunk.unverified_by = ""


def dropped_copy(chunk: Chunk, worker_id: str) -> list[Decision]:
    """A held (reported, undecided) copy of a barred worker no longer counts."""
    chunk.holders.pop(worker_id, None)
    chunk.reported = max(0, chunk.reported - 1)
    settle_state(chunk)
    return [Released()] if chunk.state is ChunkState.PENDING else []

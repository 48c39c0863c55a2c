"""Where to look for backup copies: the leased chunks whose lease may have run too long.

A chunk gets a backup copy once its single active lease has run ``backup_factor`` times
longer than its holder should take (:func:`hydracompute.core.leases.wants_backup`). Looking
at every leased chunk of a job on every exchange that asks for work at its tail costs as
many reads as there are chunks in play: 40,000 per exchange with 10,000 workers, 300,000
with 100,000, which is what kept the simulator from those pools.

:class:`BackupWatch` keeps, per job, each active lease's *due* time: when it would want a
backup at the holder's speed and the chunk target known when the time was computed, in a
heap. An exchange looks only at the chunks whose due time has come (:meth:`JobWatch.ready`),
in index order, and decides each exactly as the whole scan did, with the speed and target
of the moment. The due times are kept early enough that no chunk is missed:

- a lease granted here is entered at its grant (:meth:`BackupWatch.enter`);
- a holder whose speed grows has its leases entered again (:meth:`BackupWatch.enter`):
  a faster holder should have finished sooner;
- a chunk target that shrinks (fewer cores online) makes every due time that counted it
  earlier: those leases are entered again, or the job's times all recomputed;
- a lease whose chunk is not due after all (its holder slowed down, the target grew) goes
  back with its new due time.

It is a cache this process may lose, never the truth: a job's times are recomputed from
the backend by one scan of its leased chunks when first needed and every ``rebuild_s``
after (leases granted by another coordinator sharing the database, or a failed commit after
a search, are then seen). Entries of ended leases are dropped when they come up.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hydracompute.core.leases import MAX_EXPECTED_TARGETS, expected_duration_s

#: Due times this close to now count as come (a due time is a sum of floats; the decision
#: itself is exact).
DUE_SLACK_S = 1e-6


def due_s(
    issued_s: float, cost: float, speed: float | None, target_s: float, factor: float
) -> float:
    """When a lease issued at ``issued_s`` wants a backup (as
    :func:`~hydracompute.core.leases.wants_backup` decides, from then on)."""
    return issued_s + factor * expected_duration_s(cost, speed, target_s)


def counts_target(cost: float, speed: float | None, target_s: float) -> bool:
    """Whether a lease's expected time is set by the target (unknown speed, or capped)."""
    return not speed or cost / speed >= MAX_EXPECTED_TARGETS * target_s


@dataclass
class JobWatch:
    """One job's due times."""

    built_s: float
    #: The largest target that the due times in :attr:`by_target` counted.
    target_s: float = 0.0
    #: (due time, chunk index, lease id), soonest first.
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    #: chunk index -> leases whose due time has come (still active when last looked at).
    due: dict[int, set[str]] = field(default_factory=dict)
    #: (chunk index, lease id, issued, cost) of leases whose due time counted the target.
    by_target: list[tuple[int, str, float, float]] = field(default_factory=list)
    #: The longest expected time (cost over speed) counted without the target: a target
    #: shrinking below a tenth of it may cap some of them.
    longest_s: float = 0.0

    def add(
        self,
        index: int,
        lease_id: str,
        issued_s: float,
        cost: float,
        speed: float | None,
        target_s: float,
        factor: float,
    ) -> None:
        heapq.heappush(self.heap, (due_s(issued_s, cost, speed, target_s, factor), index, lease_id))
        if counts_target(cost, speed, target_s):
            self.by_target.append((index, lease_id, issued_s, cost))
            self.target_s = max(self.target_s, target_s)
        elif speed:
            self.longest_s = max(self.longest_s, cost / speed)

    def ready(self, now: float) -> list[int]:
        """The chunks with a lease whose due time has come, in index order."""
        heap, due = self.heap, self.due
        while heap and heap[0][0] <= now + DUE_SLACK_S:
            _, index, lease_id = heapq.heappop(heap)
            due.setdefault(index, set()).add(lease_id)
        return sorted(due)

    def keep(self, index: int, active: Iterable[str]) -> None:
        """Only the chunk's ``active`` leases stay due (the others have ended)."""
        leases = self.due.get(index)
        if leases is not None:
            leases.intersection_update(active)
            if not leases:
                del self.due[index]

    def later(
        self,
        index: int,
        lease_id: str,
        issued_s: float,
        cost: float,
        speed: float | None,
        target_s: float,
        factor: float,
        now: float,
    ) -> None:
        """The lease is not due after all (its holder slowed down, the target grew): it
        goes back with the due time of the moment."""
        if due_s(issued_s, cost, speed, target_s, factor) <= now + DUE_SLACK_S:
            return
        leases = self.due.get(index)
        if leases is not None:
            leases.discard(lease_id)
            if not leases:
                del self.due[index]
        self.add(index, lease_id, issued_s, cost, speed, target_s, factor)


class BackupWatch:
    """Every watched job's due times (see the module's docstring)."""

    def __init__(self, backup_factor: float) -> None:
        self.factor = backup_factor
        self._jobs: dict[str, JobWatch] = {}
        #: Jobs whose due times were computed by a scan (for tests: how often it happens).
        self.scans = 0

    def job(
        self,
        job_id: str,
        now: float,
        target_s: float,
        rebuild_s: float,
        scan: Callable[[JobWatch], None],
    ) -> JobWatch:
        """The job's due times, brought up to ``now`` and ``target_s``: read again by
        ``scan(watch)`` (which enters every active lease of the job's unfinished chunks)
        when first asked for or last read more than ``rebuild_s`` ago."""
        watch = self._jobs.get(job_id)
        if watch is not None and not 0 <= now - watch.built_s < rebuild_s:
            watch = None
        if watch is not None and MAX_EXPECTED_TARGETS * target_s <= watch.longest_s:
            watch = None  # the target shrank so far that it may cap some expected times
        if watch is not None and target_s < watch.target_s:
            # The due times that counted the target come sooner: their expected time is
            # now the target (unknown speed) or ten times it (capped), the earlier of which
            # is the target.
            for index, lease_id, issued_s, _cost in watch.by_target:
                when = issued_s + self.factor * target_s
                heapq.heappush(watch.heap, (when, index, lease_id))
            watch.target_s = target_s
        if watch is None:
            watch = JobWatch(now)
            scan(watch)
            self._jobs[job_id] = watch
            self.scans += 1
        return watch

    def enter(
        self,
        job_id: str,
        index: int,
        lease_id: str,
        issued_s: float,
        cost: float,
        speed: float | None,
        target_s: float,
    ) -> None:
        """A lease on a chunk of ``job_id`` was granted, or its holder's speed grew: its due
        time is entered (if the job is watched; an earlier entry stays, and is dropped or
        put back when it comes up)."""
        watch = self._jobs.get(job_id)
        if watch is not None:
            watch.add(index, lease_id, issued_s, cost, speed, target_s, self.factor)

    def watched(self, job_id: str) -> bool:
        return job_id in self._jobs

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def forget(self, job_id: str) -> None:
        """The job ended: its due times are of no more use."""
        self._jobs.pop(job_id, None)

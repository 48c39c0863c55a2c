"""Work in flight: what the leases granted on each job still have to compute, expected from
their workers' speeds. Chunk sizing counts it at the tail of a job (see
:func:`hydracompute.core.sizing.chunk_units`).

A lease expected to take ``d`` seconds (:func:`hydracompute.core.leases.expected_duration_s`)
on a worker of speed ``s`` ends at ``issued + d``; until then it still holds
``s·(end − now)`` units of work (of cost, for a kind whose units differ in cost: speeds
are then learnt in cost per second, see :mod:`hydracompute.kinds.costs`). The sums of
``s`` and ``s·end`` over a job's leases give that job's total in O(1). A lease leaves when
its result arrives, when its worker says it no longer runs it (its result is on the way),
when it is returned or expires, and once its expected end has passed (a late lease holds
nothing more that the sizing could share out).

Everything here is an estimate kept in memory, not stored: a lease it misses (granted
before a restart, say) only makes the next tail chunks smaller. Changes made within
:meth:`InFlight.undone_on_error` are undone if the block raises (an exchange refused and
rolled back); a failed commit after it returned is not seen, and leaves an estimate too high
for at most the expected duration of the leases of that batch.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection
from dataclasses import dataclass, field


@dataclass(frozen=True)
class _Entry:
    end_s: float
    speed: float
    worker_id: str


@dataclass
class _JobWork:
    leases: dict[str, _Entry] = field(default_factory=dict)
    speed_sum: float = 0.0
    speed_end_sum: float = 0.0

    def add(self, lease_id: str, entry: _Entry) -> None:
        self.leases[lease_id] = entry
        self.speed_sum += entry.speed
        self.speed_end_sum += entry.speed * entry.end_s

    def remove(self, lease_id: str) -> _Entry:
        entry = self.leases.pop(lease_id)
        if not self.leases:  # no drift left behind by the sums
            self.speed_sum = self.speed_end_sum = 0.0
        else:
            self.speed_sum -= entry.speed
            self.speed_end_sum -= entry.speed * entry.end_s
        return entry


class InFlight:
    """Expected work still to do in the granted leases of every job; the clock is passed in."""

    def __init__(self) -> None:
        self._jobs: dict[str, _JobWork] = {}
        #: worker id -> its leases counted here, as (job id, lease id)
        self._workers: dict[str, set[tuple[str, str]]] = {}
        #: (expected end, job id, lease id) of every lease, soonest first; an entry whose
        #: lease has already left is skipped when it comes up.
        self._ends: list[tuple[float, str, str]] = []
        #: How to undo each change made within undone_on_error, or None outside it.
        self._journal: list[Callable[[], None]] | None = None

    def granted(
        self,
        job_id: str,
        lease_id: str,
        worker_id: str,
        speed: float,
        duration_s: float,
        now: float,
    ) -> None:
        """A lease went to a worker computing ``speed`` units per second, expected to take
        ``duration_s``."""
        self._expire(now)
        if speed > 0 and duration_s > 0:
            self._add(job_id, lease_id, _Entry(now + duration_s, speed, worker_id))

    def returned(self, job_id: str, lease_id: str) -> None:
        """The lease's result arrived (or it ended otherwise): it holds no more work."""
        work = self._jobs.get(job_id)
        if work is None or lease_id not in work.leases:
            return
        entry = work.remove(lease_id)
        if not work.leases:
            del self._jobs[job_id]
        leases = self._workers[entry.worker_id]
        leases.discard((job_id, lease_id))
        if not leases:
            del self._workers[entry.worker_id]
        if self._journal is not None:
            self._journal.append(lambda: self._add(job_id, lease_id, entry))

    def settle(self, worker_id: str, running: Collection[str]) -> None:
        """``worker_id`` computes only ``running`` now: its other leases are finished (their
        results on the way) or lost."""
        leases = self._workers.get(worker_id)
        if not leases:
            return
        still = set(running)
        for job_id, lease_id in list(leases):
            if lease_id not in still:
                self.returned(job_id, lease_id)

    def units(self, job_id: str, now: float) -> float:
        """Units that ``job_id``'s leases are still expected to compute after ``now``."""
        self._expire(now)
        work = self._jobs.get(job_id)
        if work is None:
            return 0.0
        return max(0.0, work.speed_end_sum - now * work.speed_sum)

    def undone_on_error(self) -> _UndoneOnError:
        """Undo every change made within the block if it raises (a context manager)."""
        return _UndoneOnError(self)

    def __len__(self) -> int:
        """Leases counted (for tests and memory checks)."""
        return sum(len(work.leases) for work in self._jobs.values())

    def _add(self, job_id: str, lease_id: str, entry: _Entry) -> None:
        self._jobs.setdefault(job_id, _JobWork()).add(lease_id, entry)
        self._workers.setdefault(entry.worker_id, set()).add((job_id, lease_id))
        # Also when undoing a removal: its first entry may have left the heap already.
        heapq.heappush(self._ends, (entry.end_s, job_id, lease_id))
        if self._journal is not None:
            self._journal.append(lambda: self.returned(job_id, lease_id))

    def _expire(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, job_id, lease_id = heapq.heappop(ends)
            work = self._jobs.get(job_id)
            entry = work.leases.get(lease_id) if work is not None else None
            if entry is not None and entry.end_s <= now:  # not one restored since
                self.returned(job_id, lease_id)


class _UndoneOnError:
    """:meth:`InFlight.undone_on_error`'s block (a class rather than a generator: every
    exchange enters one)."""

    __slots__ = ("_flight", "_outer")

    def __init__(self, flight: InFlight) -> None:
        self._flight = flight
        self._outer: list[Callable[[], None]] | None = None

    def __enter__(self) -> None:
        flight = self._flight
        self._outer, flight._journal = flight._journal, []

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        flight, outer = self._flight, self._outer
        try:
            if kind is not None:
                journal, flight._journal = flight._journal, None
                for undo in reversed(journal or []):
                    undo()
        finally:
            if outer is not None and flight._journal is not None:
                outer.extend(flight._journal)
            flight._journal = outer

"""Work in flight: what the leases granted on each job still have to compute, expected from
their workers' speeds. Chunk sizing counts it at the tail of a job (see
:func:`hydracompute.core.sizing.chunk_units`).

A lease granted to a worker of speed ``s`` for ``u`` units is expected to end at
``issued + u/s``; until then it still holds ``s·(end − now)`` units of work. The sums of
``s`` and ``s·end`` over a job's leases give that job's total in O(1); leases leave when
their result arrives, or once their expected end has passed (a late lease holds nothing
more that the sizing could share out). Everything here is an estimate kept in memory: it is
not stored, and a lease it misses (granted before a restart, say) only makes the next tail
chunks a little smaller.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class _JobWork:
    #: lease id -> (expected end, units per second)
    leases: dict[str, tuple[float, float]] = field(default_factory=dict)
    speed_sum: float = 0.0
    speed_end_sum: float = 0.0

    def add(self, lease_id: str, end_s: float, speed: float) -> None:
        self.leases[lease_id] = (end_s, speed)
        self.speed_sum += speed
        self.speed_end_sum += speed * end_s

    def remove(self, lease_id: str) -> None:
        end_s, speed = self.leases.pop(lease_id)
        if not self.leases:  # no drift left behind by the sums
            self.speed_sum = self.speed_end_sum = 0.0
        else:
            self.speed_sum -= speed
            self.speed_end_sum -= speed * end_s


class InFlight:
    """Expected work still to do in the granted leases of every job; the clock is passed in."""

    def __init__(self) -> None:
        self._jobs: dict[str, _JobWork] = {}
        #: (expected end, job id, lease id) of every lease, soonest first; an entry whose
        #: lease has already left is skipped when it comes up.
        self._ends: list[tuple[float, str, str]] = []

    def granted(self, job_id: str, lease_id: str, units: int, speed: float, now: float) -> None:
        """A lease of ``units`` went to a worker computing ``speed`` units per second."""
        self._expire(now)
        if speed <= 0 or units <= 0:
            return
        end_s = now + units / speed
        self._jobs.setdefault(job_id, _JobWork()).add(lease_id, end_s, speed)
        heapq.heappush(self._ends, (end_s, job_id, lease_id))

    def returned(self, job_id: str, lease_id: str) -> None:
        """The lease's result arrived (or it ended otherwise): it holds no more work."""
        work = self._jobs.get(job_id)
        if work is not None and lease_id in work.leases:
            work.remove(lease_id)
            if not work.leases:
                del self._jobs[job_id]

    def units(self, job_id: str, now: float) -> float:
        """Units that ``job_id``'s leases are still expected to compute after ``now``."""
        self._expire(now)
        work = self._jobs.get(job_id)
        if work is None:
            return 0.0
        return max(0.0, work.speed_end_sum - now * work.speed_sum)

    def __len__(self) -> int:
        """Leases counted (for tests and memory checks)."""
        return sum(len(work.leases) for work in self._jobs.values())

    def _expire(self, now: float) -> None:
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, job_id, lease_id = heapq.heappop(ends)
            self.returned(job_id, lease_id)

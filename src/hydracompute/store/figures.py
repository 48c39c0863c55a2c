"""The pool's figures of the moment, read from the store for monitoring (``/metrics``).

They are read from the state of record each time, never kept in a coordinator's memory:
several coordinators sharing one database must all report the same pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydracompute.core.models import JobState
from hydracompute.store.pool import Store


@dataclass(frozen=True)
class PoolFigures:
    """Workers are online when seen within one lease lifetime and neither left nor revoked;
    paused ones are online workers whose owner's rules paused them."""

    workers_enrolled: int
    workers_online: int
    workers_paused: int
    #: Workers barred for a wrong output (revoked ones aside).
    workers_barred: int
    cores_online: int
    leases_in_flight: int
    jobs: dict[JobState, int]


def pool_figures(store: Store, now: float) -> PoolFigures:
    """The figures at ``now``, read in one transaction (one consistent view)."""
    with store.backend.transaction(read_only=True):
        workers = store.backend.list_workers()
        leases = sum(store.backend.active_lease_counts().values())
        jobs = store.backend.count_jobs()
    online = [w for w in workers if w.online(now, store.config.lease_ttl_s)]
    return PoolFigures(
        workers_enrolled=sum(not w.revoked for w in workers),
        workers_online=len(online),
        workers_paused=sum(w.state == "paused" for w in online),
        workers_barred=sum(bool(w.barred) and not w.revoked for w in workers),
        cores_online=sum(w.cores for w in online),
        leases_in_flight=leases,
        jobs=jobs,
    )

"""The scheduler's tunables, validated once."""

from __future__ import annotations

from dataclasses import dataclass

#: Longest ``GET /jobs/{id}?wait_s=`` is held for the job to finish: the coordinator's
#: bound on ``wait_s``, and the client's on what it asks (within its 30 s request timeout).
MAX_JOB_WAIT_S = 20.0


@dataclass(frozen=True)
class SchedulerConfig:
    """How the coordinator carves, leases and re-issues work.

    Attributes:
        target_chunk_s: wall time one chunk should take on one core of its worker.
        heartbeat_s: how often a busy worker must exchange; leases last three of these.
        max_failures: a chunk that fails on this many leases fails its job.
        speed_alpha: weight of the newest measurement in a worker's speed average.
        backup_factor: a tail chunk running this many times longer than expected gets a
            backup copy on another worker.
        max_wait_s: longest a request is held open: a worker's exchange when there is no
            work, a job's status waiting for the job to finish.
        max_leases_per_exchange: most chunks one exchange may ask for.
        capacity_results_per_s: results per second the coordinator can record (measured
            with ``bench/bench_coordinator.py``; 0 turns load control off).
        load_share: the share of that capacity the pool's results may use: as the pool
            grows, chunk times grow past each job's target to stay within it (see
            :func:`hydracompute.core.sizing.load_controlled_target_s`).
    """

    target_chunk_s: float = 2.0
    heartbeat_s: float = 5.0
    max_failures: int = 3
    speed_alpha: float = 0.5
    backup_factor: float = 1.5
    max_wait_s: float = 20.0
    max_leases_per_exchange: int = 256
    capacity_results_per_s: float = 2000.0
    load_share: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "target_chunk_s": 0.01 <= self.target_chunk_s <= 3600,
            "heartbeat_s": 0.05 <= self.heartbeat_s <= 600,
            "max_failures": 1 <= self.max_failures <= 100,
            "speed_alpha": 0 < self.speed_alpha <= 1,
            "backup_factor": 1 <= self.backup_factor <= 100,
            "max_wait_s": 0 <= self.max_wait_s <= 600,
            "max_leases_per_exchange": 1 <= self.max_leases_per_exchange <= 4096,
            "capacity_results_per_s": 0 <= self.capacity_results_per_s <= 10**7,
            "load_share": 0 <= self.load_share <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"scheduler settings out of range: {', '.join(bad)}")

    @property
    def lease_ttl_s(self) -> float:
        """A lease not renewed for this long is expired (three missed heartbeats)."""
        return 3.0 * self.heartbeat_s

"""Backup copies are looked for among the chunks whose lease's due time has come, not by
reading every leased chunk on every exchange (store/backups.py), and the copies granted are
the ones the whole scan granted."""

from __future__ import annotations

from typing import Any

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import Lease
from hydracompute.sim import parse_scenario, simulate
from hydracompute.store import MemoryBackend, ResultReport, Store
from tests.sum_kind import SumKind, sum_registry
from tests.test_sim import SABOTAGED

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=10.0)


class CountingBackend(MemoryBackend):
    """The memory backend, counting the reads a backup search makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"leased_chunks": 0, "active_leases_of_chunk": 0}

    def leased_chunks(self, job_id: str, limit: int | None = None) -> Any:
        self.calls["leased_chunks"] += 1
        return super().leased_chunks(job_id, limit)

    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]:
        self.calls["active_leases_of_chunk"] += 1
        return super().active_leases_of_chunk(job_id, index)

    def reset(self) -> None:
        self.calls = dict.fromkeys(self.calls, 0)


def test_the_tail_reads_only_the_chunks_come_due() -> None:
    backend = CountingBackend()
    store = Store(backend, sum_registry(), CONFIG)
    job = store.submit_job("sum", {"n": 80}, now=0.0)
    holders = [store.enrol_worker(f"w{i}", 1, ["sum"], 0.0)[0] for i in range(41)]
    grants = [store.exchange(w.worker_id, [], [], 1, now=0.0).leases[0] for w in holders[:40]]
    assert store.get_job(job.job_id).next_unit == job.total_units  # every chunk in play
    asker = holders[40]

    # Nothing is due before 1.5 targets (the holders' speeds are unknown): the job's leases
    # are read once, then not again.
    backend.reset()
    assert store.exchange(asker.worker_id, [], [], 1, now=0.5).leases == []
    assert backend.calls["leased_chunks"] == 1
    backend.reset()
    for now in (0.6, 0.7, 1.0, 1.4):
        assert store.exchange(asker.worker_id, [], [], 1, now=now).leases == []
    assert backend.calls == {"leased_chunks": 0, "active_leases_of_chunk": 0}

    # Every holder but the last reports; the last one's chunk (the highest index: a scan
    # bounded to the lowest indices would never reach it) gets a backup once due.
    for worker, grant in zip(holders[:39], grants[:39], strict=True):
        output = SumKind().compute(grant.params, grant.start, grant.stop)
        report = ResultReport(grant.lease_id, output, 0.1)
        store.exchange(worker.worker_id, [report], [], 0, now=1.45)
    (backup,) = store.exchange(asker.worker_id, [], [], 1, now=1.6).leases
    assert (backup.start, backup.stop) == (grants[39].start, grants[39].stop)
    # The next search looks at that one chunk only (two copies in play: no third).
    backend.reset()
    other = store.enrol_worker("late", 1, ["sum"], 1.7)[0]
    store.exchange(other.worker_id, [], [], 1, now=1.7)
    assert backend.calls == {"leased_chunks": 0, "active_leases_of_chunk": 1}


@pytest.mark.parametrize("scenario", ["sabotaged", "churn"])
def test_the_watch_grants_the_backups_a_whole_scan_grants(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run with the due times read again from the backend on every exchange (the
    whole scan the watch replaces) gives the same report."""
    text = SABOTAGED if scenario == "sabotaged" else CHURN
    watched, _ = simulate(parse_scenario(text), seed=2)
    monkeypatch.setattr(Store, "_backups_rebuild_s", lambda self: 0.0)
    scanned, simulation = simulate(parse_scenario(text), seed=2)
    assert simulation.store.backups.scans > 100  # it did scan on each search
    watched.pop("measured"), scanned.pop("measured")
    assert watched == scanned
    if scenario == "churn":  # (the saboteurs' pool has no stragglers: no backups)
        assert watched["work"]["backup_core_s"] > 0
    assert watched["all_jobs_ended"] and watched["units_missing"] == 0


#: 100 workers with churn, long pauses (their chunks wait for a backup) and load control
#: changing the target as cores come and go.
CHURN = """
name = "churn"
sample_period_s = 10
max_duration_s = 3600

[coordinator]
target_chunk_s = 2.0
heartbeat_s = 10.0
capacity_results_per_s = 40
load_share = 0.5

[workers]
count = 100
cores = { 1 = 1, 2 = 2, 4 = 1 }
kinds = ["pi", "mandelbrot"]
latency = { dist = "lognormal", median = 0.1, sigma = 0.5 }

[workers.speed]
pi = 500.0
mandelbrot = 800.0
factor = { dist = "lognormal", median = 1.0, sigma = 0.6 }
chunk_noise = { dist = "lognormal", median = 1.0, sigma = 0.3 }

[workers.availability]
online = { dist = "weibull", shape = 0.6, scale = 600 }
offline = { dist = "lognormal", median = 300, sigma = 1.0 }
online_at_start = 0.7
join_over_s = 10

[workers.pauses]
every = { dist = "exponential", mean = 300 }
length = { dist = "lognormal", median = 60, sigma = 1.2 }
return_after_s = 120

[[jobs]]
kind = "pi"
params = { samples = 8_000_000_000_000, seed = 1 }
count = 2
every_s = 60

[[jobs]]
kind = "mandelbrot"
params = { width = 2048, height = 2048, max_iter = 500 }
arrival_s = 30
"""

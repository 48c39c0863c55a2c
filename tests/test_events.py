"""Live-update plumbing: the event hub's coalescing and the pool's throughput sampler."""

from __future__ import annotations

import pytest

from hydracompute.coordinator import events
from hydracompute.coordinator.events import EventHub, PoolSampler
from hydracompute.core.config import SchedulerConfig
from hydracompute.store import MemoryBackend, ResultReport, Store
from hydracompute.store.records import FinishedChunk
from tests.sum_kind import SumKind, sum_registry


def test_hub_merges_changes_per_stream_and_routes_chunks_to_their_job_page() -> None:
    hub = EventHub()
    overview, page = hub.subscribe(None), hub.subscribe("j1")
    # A job's page is first sent the job as it is now: it may have changed while loading.
    assert overview.jobs == set() and page.jobs == {"j1"}
    hub.publish({"j1"}, [FinishedChunk("j1", 0, 0, 5)])
    hub.publish({"j1", "j2"}, [FinishedChunk("j2", 3, 9, 12), FinishedChunk("j1", 1, 5, 9)])
    assert overview.jobs == page.jobs == {"j1", "j2"}
    assert overview.chunks == []
    assert [c.chunk_index for c in page.chunks] == [0, 1]
    assert overview.wake.is_set() and page.wake.is_set()
    hub.unsubscribe(page)
    assert hub.subscribers == 1


def test_a_slow_page_is_told_to_reload_instead_of_buffering_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "MAX_PENDING_CHUNKS", 3)
    hub = EventHub()
    page = hub.subscribe("j")
    hub.publish({"j"}, [FinishedChunk("j", i, i, i + 1) for i in range(5)])
    assert len(page.chunks) == 3 and page.overflowed


def test_sampler_measures_work_per_second_including_jobs_that_just_finished() -> None:
    store = Store(MemoryBackend(), sum_registry(), SchedulerConfig(target_chunk_s=1.0))
    sampler = PoolSampler()
    job = store.submit_job("sum", {"n": 10}, now=0.0)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
    assert sampler.sample(store, now=0.0)["throughput"] == {"sum": 0.0}
    outcome = store.exchange(worker.worker_id, [], [], 1, now=0.0)
    while outcome.leases:  # run the whole job to its end
        reports = [
            ResultReport(g.lease_id, SumKind().compute(g.params, g.start, g.stop), 0.1)
            for g in outcome.leases
        ]
        outcome = store.exchange(worker.worker_id, reports, [], 1, now=1.0)
    assert store.get_job(job.job_id).state.finished
    point = sampler.sample(store, now=2.0)
    assert point["throughput"]["sum"] == pytest.approx(10 / 2.0)  # 10 units in 2 s
    assert list(sampler.history)[-1] is point

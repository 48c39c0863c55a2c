"""Grid-aware dispatch through the store, on both backends, with recorded traces replayed
(a real :class:`TraceSource` over CSV files): zones kept with workers, deadline jobs held
back from dirty grids while cleaner capacity is expected, deadlines kept safe, and each
grant's CO2 beside its carbon-blind counterfactual."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hydracompute.carbon.traces import TraceSource, load_traces
from hydracompute.core.carbon import CarbonMode, grams
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import JobState
from hydracompute.errors import InvalidParams, InvalidRequest
from hydracompute.store import MemoryBackend, ResultReport, SQLiteBackend, Store
from tests.sum_kind import SumKind, sum_registry

T0 = datetime(2020, 6, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0
CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=10.0)


def write_traces(folder: Path) -> TraceSource:
    """FR at 50 g/kWh throughout; DE at 500 for six hours from T0, then 100."""
    rows = {"FR": [(-24, 50), (48, 50)], "DE": [(-24, 500), (6, 100), (48, 100)]}
    for zone, points in rows.items():
        lines = ["time,gco2_per_kwh"]
        for hours, value in points:
            moment = datetime.fromtimestamp(T0 + hours * HOUR, UTC)
            lines.append(f"{moment:%Y-%m-%d %H:%M:%S},{value}")
        (folder / f"{zone}-2020.csv").write_text("\n".join(lines) + "\n")
    return TraceSource(load_traces(folder))


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = MemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "s.db")
    s = Store(backend, sum_registry(), CONFIG, carbon=write_traces(tmp_path))
    yield s
    s.close()


def report(grant_params: dict[str, int], lease_id: str, start: int, stop: int) -> ResultReport:
    return ResultReport(lease_id, SumKind().compute(grant_params, start, stop), compute_s=1.0)


def two_workers(store: Store) -> tuple[str, str]:
    """A worker in France and one in Germany, each of known speed (2 units/s: a probe
    chunk of 2 units in the 1 s they report)."""
    fr, _ = store.enrol_worker(
        "fr", 1, ["sum"], T0, grid_zone="fr", watts_per_core=5.0, power_measured=True
    )
    de, _ = store.enrol_worker("de", 1, ["sum"], T0, grid_zone="DE")
    warm = store.submit_job("sum", {"n": 4}, T0)
    for worker in (fr, de):
        (grant,) = store.exchange(worker.worker_id, [], [], 1, T0).leases
        store.exchange(
            worker.worker_id,
            [report(grant.params, grant.lease_id, grant.start, grant.stop)],
            [],
            0,
            T0 + 1,
        )
    assert store.get_job(warm.job_id).state is JobState.DONE
    return fr.worker_id, de.worker_id


def test_zones_and_measured_power_are_kept_with_the_worker(store: Store) -> None:
    fr, de = two_workers(store)
    workers = {w.worker_id: w for w in store.list_workers()}
    assert (workers[fr].grid_zone, workers[fr].power_measured) == ("FR", True)
    assert (workers[de].grid_zone, workers[de].power_measured) == ("DE", False)
    assert store.backend.zone_speeds("sum", T0 - 60) == {"FR": 2.0, "DE": 2.0}
    moved = store.update_worker_profile(de, 1, ["sum"], T0 + 2, grid_zone="gb")
    assert moved.grid_zone == "GB"
    before = [dataclasses.asdict(w) for w in store.list_workers()]
    with pytest.raises(InvalidRequest) as refused:
        store.update_worker_profile(de, 1, ["sum"], T0 + 3, grid_zone="DE; drop table")
    assert refused.value.extra["errors"] == {
        "grid_zone": refused.value.extra["errors"]["grid_zone"]
    }
    with pytest.raises(InvalidRequest):
        store.enrol_worker("x", 1, ["sum"], T0, grid_zone="é")
    assert [dataclasses.asdict(w) for w in store.list_workers()] == before


def test_a_deadline_job_goes_to_the_clean_grid_and_waits_for_dirty_hours_to_pass(
    store: Store,
) -> None:
    fr, de = two_workers(store)
    job = store.submit_job(
        "sum", {"n": 20_000}, T0 + 2, deadline_s=12 * HOUR, carbon_mode=CarbonMode.PREFER_CLEAN
    )
    assert job.blind_gco2_per_kwh == pytest.approx((50 + 500) / 2)
    # Germany is at 500 g/kWh; France's capacity before the deadline holds the work.
    assert store.exchange(de, [], [], 1, T0 + 3).leases == []
    (grant,) = store.exchange(fr, [], [], 1, T0 + 3).leases
    outcome = store.exchange(
        fr, [report(grant.params, grant.lease_id, grant.start, grant.stop)], [], 0, T0 + 4
    )
    assert outcome.grid_gco2_per_kwh == 50
    # A carbon-blind job, submitted after, runs on the dirty grid: nothing holds it back.
    blind = store.submit_job("sum", {"n": 100}, T0 + 5)
    (taken,) = store.exchange(de, [], [], 1, T0 + 6).leases
    assert taken.job_id == blind.job_id
    # The emissions of the copy France computed: measured 5 W for 1 s, at 50 g/kWh, and
    # at the pool's mean when the job was submitted for carbon-blind dispatch.
    (entry,) = store.credit_entries(job_id=job.job_id)
    assert entry.energy_measured and entry.zone == "FR"
    assert entry.gco2 == pytest.approx(grams(5.0, 50))
    assert entry.gco2_blind == pytest.approx(grams(5.0, 275))
    (zone,) = store.credit_by_zone(job.job_id)
    assert (zone.zone, zone.chunks, zone.energy_measured_j) == ("FR", 1, 5.0)


def test_temporal_shifting_holds_the_work_until_the_grid_is_clean(store: Store) -> None:
    fr, de = two_workers(store)
    store.leave(fr, T0 + 2)
    job = store.submit_job(
        "sum", {"n": 20_000}, T0 + 2, deadline_s=12 * HOUR, carbon_mode=CarbonMode.PREFER_CLEAN
    )
    assert store.exchange(de, [], [], 1, T0 + 3).leases == []  # 500 now, 100 in 6 h
    after = T0 + 6 * HOUR + 60
    (grant,) = store.exchange(de, [], [], 1, after).leases
    assert grant.job_id == job.job_id


def test_a_deadline_without_slack_lets_every_grid_take_the_work(store: Store) -> None:
    _fr, de = two_workers(store)
    # 20,000 units at 4 units/s is 5,000 s of the whole pool: an hour and a half of slack
    # holds no margin for it.
    store.submit_job(
        "sum", {"n": 20_000}, T0 + 2, deadline_s=1.5 * HOUR, carbon_mode=CarbonMode.PREFER_CLEAN
    )
    assert len(store.exchange(de, [], [], 1, T0 + 3).leases) == 1


def test_the_time_kept_before_a_deadline_follows_the_jobs_chunks(store: Store) -> None:
    _fr, de = two_workers(store)
    # 7,200 units: an hour of France's cores, due in 3 hours. In chunks of the pool's
    # target (1 s) France holds it and Germany is held back; in chunks of an hour, the
    # last ones take that long to come back (and again if a holder vanishes), so France
    # alone would be late and Germany takes the work too.
    short = store.submit_job(
        "sum", {"n": 7_200}, T0 + 2, deadline_s=3 * HOUR, carbon_mode=CarbonMode.PREFER_CLEAN
    )
    assert store.exchange(de, [], [], 1, T0 + 3).leases == []
    store.cancel_job(short.job_id, T0 + 4)
    store.submit_job(
        "sum",
        {"n": 7_200},
        T0 + 5,
        deadline_s=3 * HOUR,
        carbon_mode=CarbonMode.PREFER_CLEAN,
        target_chunk_s=HOUR,
    )
    assert len(store.exchange(de, [], [], 1, T0 + 6).leases) == 1


def test_deadline_and_carbon_mode_are_validated(store: Store) -> None:
    with pytest.raises(InvalidParams) as refused:
        store.submit_job("sum", {"n": 10}, T0, carbon_mode=CarbonMode.PREFER_CLEAN)
    assert "carbon" in refused.value.errors
    with pytest.raises(InvalidParams):
        store.submit_job("sum", {"n": 10}, T0, deadline_s=30.0)
    assert store.list_jobs() == []
    blind = store.submit_job("sum", {"n": 10}, T0, deadline_s=HOUR)
    assert blind.carbon is CarbonMode.BLIND and blind.blind_gco2_per_kwh is None
    assert store.get_job(blind.job_id).deadline_s == T0 + HOUR

"""Chunks sized in estimated cost (kinds/costs.py, core/sizing.py, store/exchange.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.sizing import chunk_units
from hydracompute.kinds import KindRegistry
from hydracompute.kinds.costs import MIN_UNIT_COST, UnitCosts
from hydracompute.store import ResultReport, SQLiteBackend, Store
from tests.sum_kind import SumKind

CONFIG = SchedulerConfig(target_chunk_s=1.0)


class DearTailSumKind(SumKind):
    """The sum kind whose last tenth of units costs 100 times the rest."""

    name = "dearsum"

    def unit_costs(self, params: dict[str, Any]) -> UnitCosts:
        n = int(params["n"])
        costs = np.ones(n)
        costs[n - n // 10 :] = 100.0
        return UnitCosts(n, costs)


def test_uniform_costs_count_units() -> None:
    costs = UnitCosts(10, None)
    assert costs.uniform
    assert costs.cost(2, 7) == 5.0
    assert costs.total() == 10.0
    assert costs.units_within(0, 3.7) == 3
    assert costs.units_within(8, 100.0) == 2  # no more than is left
    assert costs.units_within(0, 0.2) == 1  # never nothing
    assert costs.dearest() == 1.0


def test_uneven_costs_fill_a_budget_with_units() -> None:
    costs = UnitCosts(5, [1.0, 1.0, 10.0, 1.0, 0.0])
    assert not costs.uniform
    assert costs.cost(0, 2) == 2.0
    assert costs.cost(1, 4) == 12.0
    assert costs.cost(4, 5) == pytest.approx(MIN_UNIT_COST)  # never free
    assert costs.units_within(0, 2.5) == 2  # the dear unit does not fit
    assert costs.units_within(0, 12.0) == 3
    assert costs.units_within(2, 1.0) == 1  # a unit dearer than the budget: on its own
    assert costs.units_within(3, 50.0) == 2
    assert costs.dearest() == 10.0


@pytest.mark.parametrize("bad", [[1.0, 2.0], [1.0, float("nan"), 1.0], [1.0, float("inf"), 2.0]])
def test_costs_must_be_one_finite_number_a_unit(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="3 finite numbers"):
        UnitCosts(3, bad)


def test_a_chunk_gets_the_units_its_cost_allows() -> None:
    costs = UnitCosts(1000, [1.0] * 500 + [10.0] * 500)
    common = {"target_s": 2.0, "probe_units": 4, "max_units": 10**6, "share": 0.5}
    # 50 cost/s for 2 s: 100 cheap units, or 10 dear ones.
    assert chunk_units(speed=50.0, remaining=1000, costs=costs, start=0, **common) == 100
    assert chunk_units(speed=50.0, remaining=500, costs=costs, start=500, **common) == 10
    # At the tail, this core's share of the cost left (40), not of the units left (4 → 2).
    tail = chunk_units(speed=50.0, remaining=4, costs=costs, start=996, **common)
    assert tail == 2
    # Unknown speed: the probe, in cost: 4 cheap units, or 1 dear one (no smaller chunk).
    assert chunk_units(speed=None, remaining=1000, costs=costs, start=0, **common) == 4
    assert chunk_units(speed=None, remaining=500, costs=costs, start=500, **common) == 1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    kinds = KindRegistry()
    kinds.register(DearTailSumKind())
    s = Store(SQLiteBackend(tmp_path / "s.db"), kinds, CONFIG)
    yield s
    s.close()


def test_speeds_are_learnt_in_cost_and_chunks_sized_by_it(store: Store) -> None:
    """Each chunk costs about a target's worth at the speed learnt, cheap units or dear:
    in units, the dear tail's chunks would have taken a hundred times the target."""
    kind = DearTailSumKind()
    job = store.submit_job("dearsum", {"n": 20_000}, now=0.0)
    costs = kind.unit_costs(job.params)
    worker, _ = store.enrol_worker("a", 1, ["dearsum"], now=0.0)
    now = 0.0
    speed = 5000.0  # cost per second, the worker's true speed
    leases = store.exchange(worker.worker_id, [], [], 1, now=now).leases
    sizes: list[tuple[int, int]] = []
    while leases:
        (lease,) = leases
        took = costs.cost(lease.start, lease.stop) / speed
        now += took
        sizes.append((lease.start, lease.stop))
        output = kind.compute(lease.params, lease.start, lease.stop)
        report = ResultReport(lease.lease_id, output, took)
        leases = store.exchange(worker.worker_id, [report], [], 1, now=now).leases
    assert store.get_job(job.job_id).answer == {"total": sum(range(20_000))}
    assert store.list_workers()[0].speeds["dearsum"] == pytest.approx(speed)
    full = [costs.cost(a, b) / speed for a, b in sizes[1:] if b <= 18_000 or a >= 18_000]
    # Every chunk after the probe a target long but the last few of the job (the tail
    # shrinks them) and the one that straddles the dear part.
    assert sum(1 for s in full if s > 1.01 * CONFIG.target_chunk_s) == 0
    dear = [(a, b) for a, b in sizes if a >= 18_000]
    assert dear and max(b - a for a, b in dear) <= 50  # 50 dear units: one target
    assert max(b - a for a, b in sizes) == SumKind.max_chunk_units  # 1,000 cheap ones

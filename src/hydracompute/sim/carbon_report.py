"""The carbon part of a simulation's report: what the accepted copies emitted, per zone,
and whether the jobs with a deadline met it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydracompute.core.credit import JOULES_PER_KWH

if TYPE_CHECKING:
    from hydracompute.sim.engine import Simulation


def carbon_report(simulation: Simulation) -> dict[str, Any] | None:
    """``None`` when no worker has a zone. The ``gco2_blind_estimate`` is the ledger's
    counterfactual (each job's pool-mean intensity at submission); the measured one is a
    second run of the same scenario with every job carbon-blind."""
    if not simulation.scenario.population.zones:
        return None
    store = simulation.store
    zones = store.credit_by_zone()
    deadlines = {
        j.job_id: j.deadline_s for j in store.list_jobs(limit=10**6) if j.deadline_s is not None
    }
    late = [
        record.job_id
        for record in simulation.recorder.jobs.values()
        if record.job_id in deadlines
        and (record.ended_s is None or record.ended_s > deadlines[record.job_id])
    ]
    return {
        "gco2": sum(z.gco2 for z in zones),
        "gco2_blind_estimate": sum(z.gco2_blind for z in zones),
        "energy_kwh": sum(z.energy_j for z in zones) / JOULES_PER_KWH,
        "zones": {
            z.zone: {"chunks": z.chunks, "gco2": z.gco2, "energy_kwh": z.energy_j / JOULES_PER_KWH}
            for z in zones
        },
        "deadline_jobs": len(deadlines),
        "deadlines_missed": len(late),
    }

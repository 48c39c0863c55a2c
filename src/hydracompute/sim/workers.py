"""Virtual workers: what each one is (cores, speed, latency, zone, honesty) and what it holds.

Drawn once from the scenario's population with the run's seeded generator, in worker order,
so the same scenario and seed give the same pool. The behaviour (when they exchange, compute,
pause, leave) is the engine's (:mod:`hydracompute.sim.engine`); this module only holds state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hydracompute.sim.scenario import Population, Saboteurs
from hydracompute.store.records import LeaseGrant, ResultReport


@dataclass(slots=True)
class Running:
    """A chunk a virtual worker computes: its grant, when it started and how long it takes
    (``remaining_s`` while its worker is paused, ``finish_s`` otherwise)."""

    grant: LeaseGrant
    started_s: float
    duration_s: float
    finish_s: float
    remaining_s: float = 0.0


@dataclass(slots=True)
class VirtualWorker:
    index: int
    cores: int
    #: Speed factor against the reference machine (units/s = reference × factor).
    factor: float
    #: Round trip to the coordinator.
    rtt_s: float
    volunteer: int
    zone: str
    liar: bool
    worker_id: str = ""
    #: Increased at every session start and end: events of an older session are stale.
    generation: int = 0
    online: bool = False
    paused: bool = False
    #: Pauses started (a give-back event names the pause it belongs to).
    pauses: int = 0
    running: dict[str, Running] = field(default_factory=dict)
    unsent: list[ResultReport] = field(default_factory=list)
    #: An exchange is on its way (results of chunks finishing meanwhile go with it).
    exchange_due: bool = False
    #: Long-polling: held by the coordinator until work appears or the wait ends.
    waiting: bool = False
    #: Exchanges made (heartbeat and poll events carry the count they were set after).
    exchanges: int = 0
    outputs_sent: int = 0


def draw_workers(
    population: Population, saboteurs: Saboteurs, rng: random.Random
) -> list[VirtualWorker]:
    """The scenario's workers, each drawn in turn from ``rng``."""
    cores_choices = [c for c, _ in population.cores]
    cores_weights = [w for _, w in population.cores]
    zone_of = _zones(population.zones, population.count, rng)
    factor = population.speed_factor.sampler(rng)
    latency = population.latency.sampler(rng)
    liars = round(saboteurs.share * population.count)
    # Saboteurs are spread through the pool (every k-th), not the first ones enrolled.
    liar_set = set(
        rng.sample(range(population.count), liars) if liars else [],
    )
    workers = []
    for i in range(population.count):
        cores = rng.choices(cores_choices, cores_weights)[0]
        zone = zone_of[i]
        workers.append(
            VirtualWorker(
                index=i,
                cores=cores,
                factor=max(factor(), 1e-6),
                rtt_s=latency(),
                volunteer=i // population.workers_per_volunteer,
                zone=zone,
                liar=i in liar_set,
            )
        )
    return workers


def _zones(weights: dict[str, float], count: int, rng: random.Random) -> list[str]:
    """Each worker's grid zone: as many per zone as its weight's share of ``count`` (largest
    remainders first), in an order drawn from ``rng`` ("" for all without zones)."""
    total = sum(weights.values())
    if not weights or total <= 0:
        return [""] * count
    zones = sorted(weights)
    quotas = [count * weights[z] / total for z in zones]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(zones)), key=lambda k: counts[k] - quotas[k])
    for k in by_remainder[: count - sum(counts)]:
        counts[k] += 1
    drawn = [z for z, n in zip(zones, counts, strict=True) for _ in range(n)]
    rng.shuffle(drawn)
    return drawn

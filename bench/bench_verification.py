"""What verification costs and what it lets through: the real Store and scheduler, virtual
volunteers.

Drives :class:`hydracompute.store.Store` (SQLite in memory, the scheduler's real code for
carving, leasing, verification, barring and re-doing) with virtual workers on a virtual
clock. Each worker exchanges in turn, reporting the outputs of the chunks it holds; a
*naive* saboteur lies on every output, a *patient* one behaves until it is trusted on the
kind and then lies on ``--lie-rate`` of its outputs, a *careful* one likewise but only on
chunks newly carved (a chunk of a lower index than it has seen is likely a copy sent to
verify another worker, where a lie is sure to be caught). Lies are plausible: the kind's check
cannot tell them (only replication can); each saboteur tells its own, or with
``--collude`` all tell the same one (then two saboteurs given both copies of a chunk
agree). Under adaptive verification a first job (``--warm-up`` chunks) brings the workers
to trust, then the measured job runs; with ``--late`` the saboteurs join only then, into
a pool of trusted workers, where a careful one's fresh chunks are mostly first copies.
Columns:

- overhead: work computed beyond one copy of each chunk (replicas, spot checks, re-done
  chunks), over the measured job's work: the cost once honest workers are trusted;
- lies: outputs the saboteurs lied on, over both jobs;
- redone: outputs accepted alone that were computed again when their worker was barred
  (in a job still running, or in one that had finished and so ran again);
- wrong, wrong/chunk: chunks whose final output is a lie, over both jobs' chunks;
- barred: saboteurs barred, of all; honest barred: honest workers out-voted by colluders.

Prints one line per verification mode and saboteur mix, side by side in one run:

    .venv/bin/python bench/bench_verification.py [--workers 40] [--chunks 20000]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import InvalidResult
from hydracompute.kinds import Answer, ChunkOutput, JobKind, KindRegistry
from hydracompute.store import ResultReport, SQLiteBackend, Store

#: Units per second of every virtual core; chunks are sized to ``TARGET_S`` of them.
SPEED = 100.0
TARGET_S = 1.0


class Stand(JobKind):
    """A cheap stand-in kind: a chunk's output is a checksum of its range that the
    coordinator cannot check alone (as for real kinds, a plausible lie passes)."""

    name = "stand"
    probe_units = 4
    max_chunk_units = int(SPEED * TARGET_S)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": int(params["n"])}

    def total_units(self, params: dict[str, Any]) -> int:
        return int(params["n"])

    def compute(self, params: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
        return {"sum": (start * 7919 + stop * 104729) % 1_000_003}

    def check(self, params: dict[str, Any], start: int, stop: int, output: dict[str, Any]) -> None:
        if set(output) != {"sum"} or type(output["sum"]) is not int:
            raise InvalidResult("one integer field, sum")

    def merge(self, params: dict[str, Any], outputs: Iterable[ChunkOutput]) -> Answer:
        return Answer(summary={"chunks": sum(1 for _ in outputs)})


@dataclass
class Volunteer:
    worker_id: str
    kind: str  # "honest", "naive", "patient" or "careful"
    index: int
    leases: list[tuple[str, int, int, bool]]
    trusted: bool = False
    #: The highest chunk index it was given: a chunk above it is newly carved (a careful
    #: saboteur lies only on those, as copies sent to verify others are older chunks).
    newest: int = -1
    #: Takes part (saboteurs joining late sit out the warm-up job).
    active: bool = True


@dataclass
class Tally:
    computed_units: int = 0
    lies: int = 0


class RedoneCounter(logging.Handler):
    """Counts the outputs accepted alone that the store computes again when it bars their
    worker (from its one log line per bar)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("worker %s (%s) barred") and isinstance(record.args, tuple):
            self.count += int(record.args[-1])  # type: ignore[call-overload]


def simulate(
    workers: int,
    saboteur_share: float,
    strategy: str,
    chunks: int,
    warm_up: int,
    adaptive: bool,
    replication: int,
    lie_rate: float,
    seed: int,
    collude: bool,
    late: bool,
    floor: float,
) -> dict[str, float]:
    rng = random.Random(seed)
    registry = KindRegistry()
    registry.register(Stand())
    config = SchedulerConfig(target_chunk_s=TARGET_S, heartbeat_s=2.0)
    store = Store(
        SQLiteBackend(":memory:"),
        registry,
        config,
        VerificationPolicy(floor=floor),
        rng=random.Random(seed),
    )
    kind = Stand()
    policy = store.verification
    volunteers = []
    saboteurs = round(workers * saboteur_share)
    for i in range(workers):
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, f"v{i}", 0.0)
        worker, _ = store.enrol_worker(f"v{i}", 1, ["stand"], 0.0, join_token=token)
        role = strategy if i < saboteurs else "honest"
        volunteers.append(
            Volunteer(worker.worker_id, role, i, [], active=not late or not i < saboteurs)
        )
    now = 1.0
    units = int(SPEED * TARGET_S)
    tally = Tally()

    def output(v: Volunteer, start: int, stop: int, fresh: bool) -> dict[str, Any]:
        honest = kind.compute({}, start, stop)
        turned = v.trusted and rng.random() < lie_rate
        lying = (
            v.kind == "naive"
            or (v.kind == "patient" and turned)
            or (v.kind == "careful" and turned and fresh)
        )
        tally.lies += lying
        # Colluders tell the same lie; others each their own.
        return {"sum": honest["sum"] + (1 if collude else 1 + v.index)} if lying else honest

    def run_job(n_chunks: int) -> str:
        nonlocal now
        options: dict[str, Any] = {"adaptive": True} if adaptive else {"replication": replication}
        job = store.submit_job("stand", {"n": n_chunks * units}, now, **options)
        # Until every job has finished: one that had finished runs again when a worker
        # whose outputs it accepted alone is caught lying.
        while any(not j.state.finished for j in store.list_jobs()):
            store.expire_leases(now)
            trust = {w.worker_id: w.trust.get("stand", 0) for w in store.list_workers()}
            rng.shuffle(volunteers)  # volunteers come back in no fixed order
            for v in volunteers:
                if not v.active:
                    continue
                v.trusted = policy.is_trusted(trust.get(v.worker_id, 0))
                reports = [
                    ResultReport(
                        lease_id, output(v, start, stop, fresh), compute_s=(stop - start) / SPEED
                    )
                    for lease_id, start, stop, fresh in v.leases
                ]
                tally.computed_units += sum(stop - start for _, start, stop, _ in v.leases)
                outcome = store.exchange(v.worker_id, reports, [], 1, now)
                v.leases = [
                    (g.lease_id, g.start, g.stop, g.chunk_index > v.newest) for g in outcome.leases
                ]
                v.newest = max([v.newest, *(g.chunk_index for g in outcome.leases)])
            now += TARGET_S
        return job.job_id

    redone = RedoneCounter()
    logging.getLogger("hydracompute.store").addHandler(redone)
    jobs = [run_job(warm_up)] if adaptive and warm_up else []
    for v in volunteers:
        v.active = True
    tally.computed_units = 0
    began = time.perf_counter()
    jobs.append(run_job(chunks))
    elapsed = time.perf_counter() - began
    logging.getLogger("hydracompute.store").removeHandler(redone)
    job = store.get_job(jobs[-1])
    reopened = sum(store.get_job(job_id).reopened for job_id in jobs)
    outputs = [o for job_id in jobs for o in store.job_outputs(job_id)]
    wrong = sum(o.output != kind.compute({}, o.start, o.stop) for o in outputs)
    liars = {v.worker_id for v in volunteers if v.kind != "honest"}
    barred = {w.worker_id for w in store.list_workers() if w.barred}
    store.close()
    return {
        "error": job.error or "",
        "chunks": len(outputs),
        "overhead": tally.computed_units / job.total_units - 1,
        "lies": tally.lies,
        "redone": redone.count,
        "reopened": reopened,
        "wrong": wrong,
        "barred": len(barred & liars),
        "honest_barred": len(barred - liars),
        "saboteurs": saboteurs,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--warm-up", type=int, default=12000)
    parser.add_argument("--lie-rate", type=float, default=0.2)
    parser.add_argument(
        "--floor", type=float, default=VerificationPolicy.floor, help="--replicate-trusted"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--collude", action="store_true", help="Saboteurs all tell the same lie (they agree)."
    )
    parser.add_argument(
        "--late",
        action="store_true",
        help="Saboteurs join after the warm-up, among trusted workers (then patient and "
        "careful ones must earn trust during the measured job: give it more --chunks).",
    )
    args = parser.parse_args()
    # The store logs one line per bar: counted (RedoneCounter), not printed.
    logging.getLogger("hydracompute.store").propagate = False
    policy = VerificationPolicy(floor=args.floor)
    print(
        f"adaptive policy: error bound {policy.error_bound:g}, saboteur share "
        f"{policy.saboteur_share:g} -> trusted after {policy.trust_threshold} confirmed "
        f"outputs, floor {policy.floor:g}, spot checks {policy.spot_check_rate:g}"
    )
    print(
        f"{'mode':<14}{'saboteurs':<18}{'overhead':>9}{'lies':>7}{'redone':>7}{'wrong':>7}"
        f"{'wrong/chunk':>12}{'barred':>9}{'honest barred':>14}{'s':>7}"
    )
    modes = [("replicas 2/2", False, 2), ("adaptive", True, 1)]
    for label, adaptive, replication in modes:
        for share, strategy in [
            (0.0, "naive"),
            (0.2, "naive"),
            (0.4, "naive"),
            (0.2, "patient"),
            (0.4, "patient"),
            (0.2, "careful"),
            (0.4, "careful"),
        ]:
            if share == 0 and strategy != "naive":
                continue
            r = simulate(
                args.workers,
                share,
                strategy,
                args.chunks,
                args.warm_up,
                adaptive,
                replication,
                args.lie_rate,
                args.seed,
                args.collude,
                args.late,
                args.floor,
            )
            mix = f"{share:.0%} {strategy}" if share else "none"
            print(
                f"{label:<14}{mix:<18}{r['overhead']:>9.1%}{r['lies']:>7.0f}{r['redone']:>7.0f}"
                f"{r['wrong']:>7.0f}"
                f"{r['wrong'] / r['chunks']:>12.2e}{r['barred']:>5.0f}/{r['saboteurs']:<3.0f}"
                f"{r['honest_barred']:>14.0f}{r['seconds']:>7.1f}",
                flush=True,
            )
            if r["error"]:
                print(f"  the job failed: {r['error']}", flush=True)


if __name__ == "__main__":
    main()

"""The discrete-event loop: virtual workers and a virtual clock around the real store.

Events sit in one heap ordered by (virtual time, sequence number); each is handled by
calling the real :class:`~hydracompute.store.Store` (and through it core/) with ``now`` set
to the event's time, as the coordinator's request handlers and background tasks do with the
wall clock. Nothing sleeps and nothing touches a socket; only workers, the network and
time are simulated. The coordinator's periodic tasks that change state (expiring leases)
run on their own period of virtual time; those that only log (silent workers) or act after
days (forgetting workers) are not simulated.

A virtual worker follows the real agent's loop (worker/agent.py): it exchanges when chunks
finish (results, renewals and a request for as many chunks as it has free cores), renews
its leases every 0.8 heartbeat while computing, long-polls when idle (woken by the
coordinator's rule, :data:`WAKE_BATCH`, when the store reports new work or a job arrives,
or at the end of its wait), reports ``paused`` and asks for nothing during its owner's
pauses, gives its leases back after ``return_after_s`` of a pause, and at the end of a
session either leaves (sending what is done and giving back the rest) or vanishes (its
leases expire).
"""

from __future__ import annotations

import gc
import heapq
import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from hydracompute.core.carbon import CarbonMode
from hydracompute.core.models import JobState
from hydracompute.errors import HydraError, TooManyRequests
from hydracompute.sim.recorder import Recorder
from hydracompute.sim.scenario import Scenario
from hydracompute.sim.standin import MODULUS, StandInKind, true_value, unit_costs
from hydracompute.sim.workers import Running, VirtualWorker, draw_workers
from hydracompute.store import ResultReport, Store
from hydracompute.store.pool import EXPIRE_BATCH
from hydracompute.store.records import ExchangeOutcome, LeaseGrant

# Event codes (small ints: the heap compares tuples).
ARRIVE, ONLINE, OFFLINE, EXCHANGE, DONE, HEARTBEAT = 0, 1, 2, 3, 4, 5
PAUSE, RESUME, GIVE_BACK, POLL_END, EXPIRE, SAMPLE = 6, 7, 8, 9, 10, 11
#: A busy agent exchanges after this share of a heartbeat without one (worker/agent.py).
RENEW_SHARE = 0.8
#: Held requests woken, longest held first, when work appears; each woken one given work
#: wakes as many more, one given nothing wakes none, and a new job wakes them all: the
#: coordinator's rule (``WAKE_BATCH`` in coordinator/service.py). A barred worker's request
#: is never woken.
WAKE_BATCH = 4
#: A submitter refused for having too many running jobs tries again after this long.
SUBMIT_RETRY_S = 30.0
#: The longest a worker asks to be held (the agent's default ``wait_s``).
AGENT_WAIT_S = 20.0
#: The garbage collector's first threshold while a simulation runs (Python's default is
#: 700 allocations). A run makes and drops millions of short-lived objects (the store's
#: copies of its records, grants, results), so the young generation filled every few
#: exchanges; at 2,000 workers the collector took about a tenth of the process's CPU.
GC_YOUNG_THRESHOLD = 50_000


class Simulation:
    """One run of a scenario with a seed against ``store`` (built for the scenario)."""

    def __init__(
        self, scenario: Scenario, store: Store, seed: int, recorder: Recorder | None = None
    ) -> None:
        self.scenario = scenario
        self.store = store
        self.rng = random.Random(seed)
        population = scenario.population
        self.workers = draw_workers(population, scenario.saboteurs, self.rng)
        self.online_s = population.online.sampler(self.rng)
        self.offline_s = population.offline.sampler(self.rng)
        every = population.pause_every
        self.pause_every_s = None if every is None else every.sampler(self.rng)
        self.pause_s = population.pause_length.sampler(self.rng)
        self.noise = population.chunk_noise.sampler(self.rng)
        self.config = store.config
        self.recorder = recorder or Recorder(scenario, store)
        self.now = 0.0
        self._heap: list[tuple[float, int, int, int, Any]] = []
        self._seq = 0
        self._waiters: dict[int, None] = {}  # insertion-ordered set of worker indices
        self._seen_version = store.work_version
        #: job id -> (stand-in kind, cumulative unit costs or None, reference speed)
        self._jobs: dict[str, tuple[StandInKind, npt.NDArray[np.float64] | None, float]] = {}
        self.job_ids: list[str] = []
        self.unfinished = 0
        self.arrived = 0

    # the loop

    def push(self, at: float, code: int, worker: int = -1, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, code, worker, payload))

    def run(self) -> None:
        """Run until every job has arrived and ended, or the scenario's time is up."""
        thresholds = gc.get_threshold()
        gc.set_threshold(max(GC_YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])
        try:
            self._run()
        finally:
            gc.set_threshold(*thresholds)

    def _run(self) -> None:
        scenario = self.scenario
        for i, spec in enumerate(scenario.jobs):
            self.push(spec.arrival_s, ARRIVE, payload=i)
        self._start_workers()
        self.push(self._expire_period(), EXPIRE)
        self.push(0.0, SAMPLE)
        handlers: dict[int, Callable[[VirtualWorker, Any], None]] = {
            ONLINE: self._online,
            OFFLINE: self._offline,
            EXCHANGE: self._exchange_event,
            DONE: self._done,
            HEARTBEAT: self._heartbeat,
            PAUSE: self._pause,
            RESUME: self._resume,
            GIVE_BACK: self._give_back,
            POLL_END: self._poll_end,
        }
        heap, workers, limit = self._heap, self.workers, scenario.max_duration_s
        total_jobs = len(scenario.jobs)
        while heap:
            at, _, code, index, payload = heapq.heappop(heap)
            if at > limit:
                break
            self.now = at
            if code == ARRIVE:
                self._arrive(payload)
            elif code == EXPIRE:
                self._expire()
            elif code == SAMPLE:
                self.recorder.sample(at, self)
                self.push(at + scenario.sample_period_s, SAMPLE)
            else:
                handlers[code](workers[index], payload)
            # (as the coordinator checks after every store call, woken ones' too)
            while self.store.work_version != self._seen_version:
                self._seen_version = self.store.work_version
                self._wake_waiters()
            if self.arrived == total_jobs and self.unfinished == 0:
                break
        self.recorder.sample(self.now, self)

    def _start_workers(self) -> None:
        population = self.scenario.population
        for worker in self.workers:
            if population.always_on or self.rng.random() < population.online_at_start:
                # Machines online at the start were not all switched on in one instant.
                self.push(population.join_over_s * self.rng.random(), ONLINE, worker.index)
            else:  # part-way through an absence when the run starts
                self.push(self.offline_s() * self.rng.random(), ONLINE, worker.index)

    def _expire_period(self) -> float:
        return min(1.0, self.config.heartbeat_s / 2)

    # jobs

    def _arrive(self, index: int) -> None:
        spec = self.scenario.jobs[index]
        kind = self.store.kinds.get(spec.kind)
        assert isinstance(kind, StandInKind)
        try:
            job = self.store.submit_job(
                spec.kind,
                spec.params,
                self.now,
                name=spec.name,
                target_chunk_s=spec.target_chunk_s,
                replication=spec.replication,
                quorum=spec.quorum,
                adaptive=spec.adaptive,
                deadline_s=spec.deadline_s,
                carbon_mode=CarbonMode(spec.carbon),
            )
        except TooManyRequests:  # as many running jobs as a submitter may have: later
            self.push(self.now + SUBMIT_RETRY_S, ARRIVE, payload=index)
            return
        costs = unit_costs(kind.real, job.params, exact=spec.tile_costs == "exact")
        cumulative = None if costs is None else np.concatenate(([0.0], np.cumsum(costs)))
        speed = self.scenario.population.speeds[spec.kind]
        self._jobs[job.job_id] = (kind, cumulative, speed)
        self.job_ids.append(job.job_id)
        self.recorder.job_arrived(job, spec, speed)
        self.arrived += 1
        self.unfinished += 1
        self._seen_version = self.store.work_version
        self._wake_all_waiters()

    def _jobs_ended(self, job_ids: set[str]) -> None:
        for job_id in sorted(job_ids):
            job = self.store.get_job(job_id)
            if job.state is not JobState.RUNNING:
                self.unfinished -= 1
                self.recorder.job_ended(job)

    # sessions

    def _online(self, worker: VirtualWorker, _: Any) -> None:
        population = self.scenario.population
        worker.generation += 1
        worker.online, worker.paused = True, False
        kinds = list(population.kinds)
        if not worker.worker_id:
            record, _secret = self.store.enrol_worker(
                f"virtual-{worker.index}",
                worker.cores,
                kinds,
                self.now,
                volunteer=f"volunteer-{worker.volunteer}",
                grid_zone=worker.zone,
            )
            worker.worker_id = record.worker_id
        else:  # a rejoin: the worker says who it is and what it has
            self.store.update_worker_profile(
                worker.worker_id, worker.cores, kinds, self.now, grid_zone=worker.zone
            )
        self.recorder.capacity_changed(self.now, worker.cores * worker.factor, 1)
        if not population.always_on:
            self.push(self.now + self.online_s(), OFFLINE, worker.index, worker.generation)
        self._schedule_pause(worker)
        self._exchange(worker, "online")

    def _offline(self, worker: VirtualWorker, generation: int) -> None:
        if generation != worker.generation:
            return
        self._collect(worker)
        if self.rng.random() < self.scenario.population.clean_leave_share:
            if worker.unsent:
                self._call_exchange(worker, 0, "leaving")
            self.store.leave(worker.worker_id, self.now)
        self._drop_all(worker)
        worker.unsent.clear()
        lost = 0.0 if worker.paused else -worker.cores * worker.factor
        self.recorder.capacity_changed(self.now, lost, -1)
        worker.generation += 1
        worker.online = worker.paused = worker.exchange_due = False
        self._waiters.pop(worker.index, None)
        worker.waiting = False
        self.push(self.now + self.offline_s(), ONLINE, worker.index)

    # owner's pauses

    def _schedule_pause(self, worker: VirtualWorker) -> None:
        if self.pause_every_s is not None:
            self.push(self.now + self.pause_every_s(), PAUSE, worker.index, worker.generation)

    def _pause(self, worker: VirtualWorker, generation: int) -> None:
        if generation != worker.generation or worker.paused:
            return
        self._collect(worker)
        worker.paused = True
        worker.pauses += 1
        for running in worker.running.values():
            running.remaining_s = max(running.finish_s - self.now, 0.0)
            running.finish_s = math.inf
        self.recorder.capacity_changed(self.now, -worker.cores * worker.factor)
        length = self.pause_s()
        self.push(self.now + length, RESUME, worker.index, generation)
        return_after = self.scenario.population.return_after_s
        if length > return_after:
            self.push(self.now + return_after, GIVE_BACK, worker.index, (generation, worker.pauses))
        self._exchange(worker, "paused")  # tells the pool it is paused

    def _give_back(self, worker: VirtualWorker, payload: tuple[int, int]) -> None:
        generation, pause = payload
        if generation != worker.generation or not worker.paused or pause != worker.pauses:
            return
        held = list(worker.running)
        if held:
            self.store.return_leases(worker.worker_id, held, self.now)
            self._drop_all(worker)

    def _resume(self, worker: VirtualWorker, generation: int) -> None:
        if generation != worker.generation or not worker.paused:
            return
        worker.paused = False
        self.recorder.capacity_changed(self.now, worker.cores * worker.factor)
        for lease_id, running in worker.running.items():
            running.finish_s = self.now + running.remaining_s
            self.push(running.finish_s, DONE, worker.index, (generation, lease_id))
        self._schedule_pause(worker)
        self._exchange(worker, "resumed")

    # computing

    def _done(self, worker: VirtualWorker, payload: tuple[int, str]) -> None:
        generation, lease_id = payload
        running = worker.running.get(lease_id)
        if generation != worker.generation or running is None or running.finish_s != self.now:
            return
        self._collect(worker)
        if not worker.exchange_due:
            worker.exchange_due = True
            self.push(self.now + worker.rtt_s / 2, EXCHANGE, worker.index, (generation, "results"))

    def _collect(self, worker: VirtualWorker) -> None:
        """Move the chunks finished by now to the results to send."""
        for lease_id, running in list(worker.running.items()):
            if running.finish_s <= self.now:
                del worker.running[lease_id]
                worker.unsent.append(self._result(worker, running))
                self.recorder.computed(lease_id, running.duration_s * 1.0, True)

    def _result(self, worker: VirtualWorker, running: Running) -> ResultReport:
        grant = running.grant
        kind = self._jobs[grant.job_id][0]
        value = true_value(kind.key(grant.params), grant.start, grant.stop)
        if worker.liar and self._lies(worker):
            # Colluding saboteurs all tell the same lie (so two of them agree); others each
            # their own.
            offset = 1 if self.scenario.saboteurs.collude else 1 + worker.index
            value = (value + offset) % MODULUS
            self.recorder.lied(grant.lease_id)
        worker.outputs_sent += 1
        return ResultReport(grant.lease_id, {"value": value}, running.duration_s)

    def _lies(self, worker: VirtualWorker) -> bool:
        saboteurs = self.scenario.saboteurs
        if saboteurs.strategy == "after_trust" and worker.outputs_sent < saboteurs.honest_first:
            return False
        return saboteurs.strategy == "always" or self.rng.random() < saboteurs.probability

    def _drop_all(self, worker: VirtualWorker) -> None:
        """The worker stops computing everything it holds (given back, or gone)."""
        for lease_id, running in worker.running.items():
            done_s = running.duration_s - (
                running.remaining_s if worker.paused else max(running.finish_s - self.now, 0.0)
            )
            self.recorder.computed(lease_id, max(done_s, 0.0), False)
        worker.running.clear()

    # exchanges

    def _exchange_event(self, worker: VirtualWorker, payload: tuple[int, str]) -> None:
        generation, cause = payload
        if generation == worker.generation and worker.online:
            worker.exchange_due = False
            self._exchange(worker, cause)

    def _heartbeat(self, worker: VirtualWorker, payload: tuple[int, int]) -> None:
        generation, exchanges = payload
        if generation == worker.generation and worker.exchanges == exchanges and worker.online:
            self._collect(worker)
            self._exchange(worker, "heartbeat")

    def _poll_end(self, worker: VirtualWorker, payload: tuple[int, int]) -> None:
        generation, exchanges = payload
        if generation == worker.generation and worker.exchanges == exchanges and worker.waiting:
            # The held request is answered empty; the agent asks again at once.
            self._waiters.pop(worker.index, None)
            worker.waiting = False
            worker.exchange_due = True
            self.push(self.now + worker.rtt_s, EXCHANGE, worker.index, (generation, "poll again"))

    def _wake_waiters(self, count: int = WAKE_BATCH) -> None:
        """New work: ``count`` held requests are looked at again, longest held first, and
        :data:`WAKE_BATCH` more for each one given work (the coordinator's rule). One given
        nothing is held again, behind the others."""
        waiters = self._waiters
        while count > 0 and waiters:
            index = next(iter(waiters))
            del waiters[index]
            worker = self.workers[index]
            worker.waiting = False
            count -= 1
            if self._exchange(worker, "woken"):
                count += WAKE_BATCH

    def _wake_all_waiters(self) -> None:
        """A new job: every held request looks again (any of them may run its kind)."""
        self._wake_waiters(len(self._waiters))

    def _exchange(self, worker: VirtualWorker, cause: str) -> int:
        """One exchange reaching the coordinator now (``cause``: what made the worker send
        it, counted in the report); plan what the worker does next. Returns how many
        chunks it was given."""
        want = 0 if worker.paused else max(worker.cores - len(worker.running), 0)
        outcome = self._call_exchange(worker, want, cause)
        if outcome is None:
            return 0
        for lease_id in outcome.abandon:
            running = worker.running.pop(lease_id, None)
            if running is not None:
                done_s = running.duration_s - (
                    running.remaining_s if worker.paused else max(running.finish_s - self.now, 0.0)
                )
                self.recorder.computed(lease_id, max(done_s, 0.0), False)
        start = self.now + worker.rtt_s / 2
        for grant in outcome.leases:
            self._start(worker, grant, start)
        generation = worker.generation
        if want > 0 and not outcome.leases and not worker.running:
            worker.waiting = True
            if not outcome.barred:  # the coordinator looks at a barred one's never again
                self._waiters[worker.index] = None
            hold = min(AGENT_WAIT_S, self.config.max_wait_s, self.config.heartbeat_s)
            self.push(self.now + hold, POLL_END, worker.index, (generation, worker.exchanges))
        elif worker.running or worker.paused:
            due = self.now + worker.rtt_s + RENEW_SHARE * self.config.heartbeat_s
            self.push(due, HEARTBEAT, worker.index, (generation, worker.exchanges))
        return len(outcome.leases)

    def _call_exchange(
        self, worker: VirtualWorker, want: int, cause: str
    ) -> ExchangeOutcome | None:
        results, worker.unsent = worker.unsent, []
        running = list(worker.running)
        state = "paused" if worker.paused else "running"
        worker.exchanges += 1
        began = time.process_time()
        try:
            outcome = self.store.exchange(
                worker.worker_id, results, running, want, self.now, state=state
            )
        except HydraError as exc:
            # The agent drops a refused result and tries again without it.
            self.recorder.refused(exc)
            refused = exc.extra.get("lease_id")
            worker.unsent = [r for r in results if r.lease_id != refused]
            if refused is None or len(worker.unsent) == len(results):
                worker.unsent = []
                return None
            return self._call_exchange(worker, want, cause)
        self.recorder.exchanged(time.process_time() - began, len(results), outcome, cause)
        if outcome.ended_jobs:
            self._jobs_ended(outcome.ended_jobs)
        return outcome

    def _start(self, worker: VirtualWorker, grant: LeaseGrant, start_s: float) -> None:
        _kind, cumulative, speed = self._jobs[grant.job_id]
        if cumulative is None:
            cost = float(grant.stop - grant.start)
        else:
            cost = float(cumulative[grant.stop] - cumulative[grant.start])
        duration = cost / (speed * worker.factor) * self.noise()
        running = Running(grant, start_s, duration, start_s + duration)
        worker.running[grant.lease_id] = running
        self.recorder.granted(grant, duration, worker)
        if worker.paused:  # an answer granting work reached a paused worker
            running.remaining_s, running.finish_s = duration, math.inf
        else:
            self.push(running.finish_s, DONE, worker.index, (worker.generation, grant.lease_id))

    # the coordinator's background task

    def _expire(self) -> None:
        while self.store.expire_leases(self.now) == EXPIRE_BATCH:
            pass
        self.push(self._next_sweep(), EXPIRE)

    def _next_sweep(self) -> float:
        """The next of the sweeps every :meth:`_expire_period` that has a lease to expire.

        The sweeps between are skipped: they would find nothing (an empty sweep changes
        nothing in the store), and at one a second they were most of a long run's events.
        No lease is overdue before the earliest deadline in hand, and one granted or
        renewed from now on is due at least a lease's lifetime from now.
        """
        period = self._expire_period()
        due = self.now + self.config.lease_ttl_s
        earliest = self.store.earliest_lease_deadline()
        if earliest is not None:
            due = min(due, earliest)
        # The first sweep after ``due``: a lease is overdue once its deadline is past.
        return max((math.floor(due / period) + 1) * period, self.now + period)

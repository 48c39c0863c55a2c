"""Verdicts: the part of an exchange that carries out the chunk life cycle's decisions.

:mod:`hydracompute.core.lifecycle` decides (accept an output, hold it for other copies,
confirm or bar workers, fail the job); :class:`Verdicts` applies those decisions through the
backend's primitives, inside the exchange's transaction: outputs and candidate copies
stored, leases ended, trust and credit written, a barred worker's unverified outputs computed
again (in finished jobs too, which then run again), and a complete job merged.
:class:`~hydracompute.store.exchange.Exchange` is a :class:`Verdicts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from hydracompute.core import credit, lifecycle
from hydracompute.core.carbon import CarbonMode
from hydracompute.core.inflight import InFlight
from hydracompute.core.models import (
    JSON,
    Chunk,
    ChunkState,
    Job,
    JobState,
    Lease,
    LeaseState,
    Worker,
)
from hydracompute.kinds import ChunkOutput, JobKind, KindRegistry
from hydracompute.kinds.costs import UnitCosts
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.grid import GridDispatch
from hydracompute.store.records import ExchangeOutcome, FinishedChunk

log = logging.getLogger("hydracompute.store")


class Verdicts:
    """Applies verdicts for one exchange; the exchange provides the state below."""

    db: Backend
    kinds: KindRegistry
    worker: Worker
    now: float
    outcome: ExchangeOutcome
    in_flight: InFlight
    credit_policy: credit.CreditPolicy
    grid: GridDispatch | None
    #: Leases the exchange has in hand (changed, written by it).
    _leases: dict[str, Lease]

    def job(self, job_id: str) -> Job:
        raise NotImplementedError  # the exchange's: the job as this exchange sees it

    def save_job(self, job: Job) -> None:
        raise NotImplementedError  # the exchange's: the job is written once, at its end

    def _kind(self, job: Job) -> tuple[JobKind, UnitCosts | None]:
        raise NotImplementedError  # the exchange's: looked up once per exchange

    def _apply(
        self,
        job: Job,
        chunk: Chunk,
        decisions: list[lifecycle.Decision],
        was_active: bool = True,
        volunteers: dict[str, str] | None = None,
    ) -> None:
        """Carry out the life cycle's decisions about ``chunk`` of ``job`` (``volunteers``:
        the join token of each worker that held a copy, before the decisions)."""
        for decision in decisions:
            if isinstance(decision, lifecycle.Accept):
                self._accept(job, chunk, decision, was_active, volunteers or {})
            elif isinstance(decision, lifecycle.Hold):
                self.db.put_candidate(job.job_id, chunk.index, decision.copy)
            elif isinstance(decision, lifecycle.Confirm):
                for worker_id in decision.worker_ids:
                    self.other_worker(worker_id, lambda w: _add_trust(w, job.kind))
            elif isinstance(decision, lifecycle.Bar):
                self.bar(decision.worker_id, decision.reason)
            elif isinstance(decision, lifecycle.FailJob):
                self._fail_job(job, decision.reason)
            elif isinstance(decision, lifecycle.Released):
                self.outcome.released_work = True

    def _track_active_holders(self, chunk: Chunk) -> None:
        for other in self.db.active_leases_of_chunk(chunk.job_id, chunk.index):
            if other.worker_id not in chunk.holders and not other.spot_check:
                holder = self.db.get_worker(other.worker_id)
                chunk.holders[other.worker_id] = holder.token_id if holder else ""
        lifecycle.settle_state(chunk)

    def _active_copies(self, chunk: Chunk) -> int:
        """Copies of a chunk that does not keep its holders still computing (an indexed
        count, read only when one of its leases ends unfinished)."""
        if lifecycle.tracked(chunk):
            return 0
        return len(self.db.active_leases_of_chunk(chunk.job_id, chunk.index))

    def _accept(
        self,
        job: Job,
        chunk: Chunk,
        accept: lifecycle.Accept,
        was_active: bool,
        volunteers: dict[str, str],
    ) -> None:
        kind = self._kind(job)[0]
        earners: list[credit.Contribution] = []
        lone = accept.winner.lease_id in self._leases and len(accept.agreeing) == 1
        if lone and not accept.outvoted:  # most chunks: this one copy, written by the caller
            mine = self._leases[accept.winner.lease_id]
            mine.state = LeaseState.DONE
            earners.append(self._earner(job, accept.winner.worker_id, volunteers, mine.compute_s))
        else:
            for each in (*accept.agreeing, *accept.outvoted):
                in_hand = self._leases.get(each.lease_id)  # written by the caller
                lease = in_hand or self.db.get_lease(each.lease_id)
                if lease is not None:
                    agreed = each in accept.agreeing
                    lease.state = LeaseState.DONE if agreed else LeaseState.INVALID
                    if in_hand is None:
                        self.db.put_lease(lease)
                    if agreed:
                        earners.append(
                            self._earner(job, each.worker_id, volunteers, lease.compute_s)
                        )
            self.db.delete_candidates(job.job_id, chunk.index)
        # Credit, in the verdict's transaction: durable exactly when the output is.
        work = kind.units_of_work(job.params, chunk.start, chunk.stop)
        entries = credit.grants(
            job.job_id, chunk.index, work, earners, self.now, self.credit_policy
        )
        self.db.append_credit(entries)
        self.outcome.credit_granted += sum(e.credit for e in entries)
        output = accept.winner.output
        self.db.put_output(StoredOutput(job.job_id, chunk.index, chunk.start, chunk.stop, output))
        self.outcome.finished.append(
            FinishedChunk(job.job_id, chunk.index, chunk.start, chunk.stop)
        )
        # Another copy of the chunk can be active only if it is replicated, if this lease
        # lapsed (expired, returned) and the chunk went to someone else, or as a backup,
        # which is given only once the whole job is carved: otherwise nothing to look for.
        if (
            job.replication > 1
            or job.adaptive
            or not was_active
            or job.next_unit == job.total_units
        ):
            for other in self.db.active_leases_of_chunk(job.job_id, chunk.index):
                other.state = LeaseState.ABANDONED
                self.db.put_lease(other)
                self.in_flight.returned(other.job_id, other.lease_id)
        job.live = kind.fold_live_chunk(job.params, job.live, chunk.start, chunk.stop, output)
        job.units_done += chunk.units
        if job.units_done == job.total_units:
            finish_job(self.db, self.kinds, job, self.now)
        self.save_job(job)

    def _earner(
        self, job: Job, worker_id: str, volunteers: dict[str, str], compute_s: float | None
    ) -> credit.Contribution:
        """A worker whose copy was accepted: its join token, its own power figure and its
        grid's intensity now. The exchanging worker's are in hand (most chunks); another's
        (a replica that agreed) are read from its record, which backends keep in memory."""
        if worker_id == self.worker.worker_id:
            worker: Worker | None = self.worker
        else:
            worker = self.db.get_worker(worker_id)
        if worker is None:  # its record is gone (removed): the chunk remembers its token
            return credit.Contribution(worker_id, volunteers.get(worker_id, ""), compute_s or 0.0)
        gco2 = blind = 0.0
        if self.grid is not None:
            gco2 = blind = self.grid.intensity(worker.grid_zone, self.now)
            if job.carbon is CarbonMode.PREFER_CLEAN and job.blind_gco2_per_kwh is not None:
                blind = job.blind_gco2_per_kwh
        return credit.Contribution(
            worker_id,
            worker.token_id,
            compute_s or 0.0,
            worker.watts_per_core,
            worker.power_measured,
            gco2,
            blind,
            worker.grid_zone,
        )

    def _fail_job(self, job: Job, reason: str) -> None:
        job.state = JobState.FAILED
        job.finished_s = self.now
        job.error = reason
        self.db.delete_job_candidates(job.job_id)  # copies waiting for agreement, now moot
        self.save_job(job)

    def other_worker(self, worker_id: str, change: Callable[[Worker], None]) -> None:
        """Change a worker's record: this exchange's own (written at its end), or another's."""
        if worker_id == self.worker.worker_id:
            change(self.worker)
            return
        worker = self.db.get_worker(worker_id)
        if worker is not None:
            change(worker)
            self.db.put_worker(worker)

    def bar(self, worker_id: str, reason: str) -> None:
        """Bar a worker found returning a wrong output: it gets no more work, its leases
        end, its outputs waiting for agreement no longer count, and the outputs it had
        accepted alone in running jobs are computed again, verified."""
        barred: list[Worker] = []

        def mark(worker: Worker) -> None:
            if not worker.barred:
                worker.barred, worker.trust = reason, {}
                barred.append(worker)

        self.other_worker(worker_id, mark)
        if not barred:
            return
        for lease in self.db.active_leases_of_worker(worker_id):
            lease.state = LeaseState.ABANDONED
            self.db.put_lease(lease)
            self.in_flight.returned(lease.job_id, lease.lease_id)
            if not lease.spot_check:
                self._change_chunk(
                    lease.job_id,
                    lease.chunk_index,
                    lambda chunk: lifecycle.lapsed(chunk, worker_id, self._active_copies(chunk)),
                )
        for job_id, index, held in self.db.candidates_of_worker(worker_id):
            self.db.delete_candidates(job_id, index, held.lease_id)
            self._change_chunk(
                job_id, index, lambda chunk: lifecycle.dropped_copy(chunk, worker_id)
            )
        reopened: set[str] = set()
        redone = 0
        for chunk in self.db.unverified_chunks(worker_id):
            # Its outputs accepted alone may be lies: their credit is withdrawn (kept for
            # the outputs others verified), whatever becomes of the job.
            earned = self.db.credit_entries(worker_id, chunk.job_id, chunk.index)
            correction = credit.withdrawal(earned, self.now)
            if correction is not None:
                self.db.append_credit([correction])
                self.outcome.credit_withdrawn -= correction.credit
            job = self.job(chunk.job_id)
            if job.state is JobState.DONE:
                # Its answer holds a lie, maybe: it runs again, and finishes again once
                # the chunk is verified (cancelled and failed jobs are left as they are).
                job.state, job.answer, job.finished_s = JobState.RUNNING, None, None
                job.reopened += 1
                self.db.delete_artefacts(job.job_id)
                log.warning(
                    "job %s runs again: it had accepted outputs of a barred worker", job.job_id
                )
            if job.state is not JobState.RUNNING:
                continue
            self.db.delete_output(job.job_id, chunk.index)
            lifecycle.reopened(chunk, job.quorum)
            self.db.put_chunk(chunk)
            job.units_done -= chunk.units
            reopened.add(job.job_id)
            redone += 1
            self.outcome.released_work = True
        log.warning(
            "worker %s (%s) barred: %s; %d of its outputs accepted alone are computed again",
            worker_id,
            barred[0].name,
            reason,
            redone,
        )
        for job_id in reopened:
            job = self.job(job_id)
            kind = self.kinds.get(job.kind)
            live: JSON = {}
            for stored in self.db.iter_outputs(job_id):
                live = kind.fold_live_chunk(
                    job.params, live, stored.start, stored.stop, stored.output
                )
            job.live = live
            self.save_job(job)

    def _change_chunk(
        self, job_id: str, index: int, change: Callable[[Chunk], list[lifecycle.Decision]]
    ) -> None:
        chunk = self.db.get_chunk(job_id, index)
        if chunk is None or chunk.state is ChunkState.DONE:
            return
        if change(chunk):
            self.outcome.released_work = True
        self.db.put_chunk(chunk)


def _add_trust(worker: Worker, kind: str) -> None:
    worker.trust[kind] = worker.trust.get(kind, 0) + 1


def chunk_outputs(db: Backend, job_id: str) -> Iterator[ChunkOutput]:
    """The job's stored outputs as its kind reads them (inside the caller's transaction)."""
    return (ChunkOutput(o.start, o.stop, o.output) for o in db.iter_outputs(job_id))


def finish_job(db: Backend, kinds: KindRegistry, job: Job, now: float) -> None:
    """Merge a complete job's outputs into its answer and artefacts."""
    kind = kinds.get(job.kind)
    outputs = chunk_outputs(db, job.job_id)
    try:
        answer = kind.answer_from_live(job.params, job.live) or kind.merge(job.params, outputs)
    except Exception as exc:  # a kind's bug must fail its job, not wedge the exchange
        log.exception("merging job %s failed", job.job_id)
        job.state, job.error = JobState.FAILED, f"merging the results failed: {exc}"
    else:
        try:
            for name, artefact in answer.artefacts.items():
                db.put_artefact(job.job_id, name, artefact.media_type, artefact.data)
        except Exception as exc:  # e.g. larger than the database takes: fail the job, clearly
            log.exception("storing the artefacts of job %s failed", job.job_id)
            job.state = JobState.FAILED
            job.error = f"its results could not be stored: {exc}"
        else:
            job.state, job.answer = JobState.DONE, answer.summary
    job.finished_s = now

"""Volunteer credit: what an accepted chunk is worth, who earns it, and what is withdrawn.

Credit is *pre-assigned*: a chunk is worth the work it contains — its kind's
:meth:`~hydracompute.kinds.base.JobKind.units_of_work` (π samples, Mandelbrot pixels) —
never what a worker claims, so a slow worker and a fast one earn the same for the same
chunk, and nobody can inflate it. It is granted only when the chunk is accepted: verified
by agreeing copies (each agreeing copy earns the chunk's worth), or accepted alone (a job
without replication, or a trusted worker's output under adaptive verification). A copy that
disagreed earns nothing; copies waiting for agreement earn nothing yet.

Credit lives in an append-only ledger: a grant is never edited. When a worker is barred for
a wrong output, what it earned for outputs accepted alone (unverified, perhaps lies) is
withdrawn by *corrections*: new entries of the opposite sign.

Each grant also carries an energy estimate: the compute time the worker reported for the
copy (capped by the lease's age, as for speeds) times the watts per core of the worker's
own figure (declared by its owner or measured), at most the pool's bound, or else of the
pool's figure. Energy is what a payout offsets (``rate per kWh``); it never changes the
credit. It is marked *measured* when the worker's power figure came from its machine's
energy counters (RAPL), *estimated* otherwise. Its CO2 is the energy at the worker's grid
intensity, beside the CO2 of carbon-blind dispatch (see :mod:`hydracompute.core.carbon`).

Pure: times are arguments, nothing here reads a clock or a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from hydracompute.core.carbon import JOULES_PER_KWH as JOULES_PER_KWH
from hydracompute.core.carbon import grams

#: The watts per core a worker may declare or report for itself, at least and at most
#: (a figure the pool believes only up to its ``max_watts_per_core``).
MIN_OWN_WATTS_PER_CORE = 0.1
MAX_OWN_WATTS_PER_CORE = 500.0
#: Payouts are counted in millionths of the currency, so that a statement adds up exactly.
MICROS = 1_000_000


class EntryKind(StrEnum):
    GRANT = "grant"  # a chunk accepted: credit earned
    CORRECTION = "correction"  # credit withdrawn (the worker was found lying)


class Grouping(StrEnum):
    """How a statement groups the ledger."""

    WORKER = "worker"
    VOLUNTEER = "volunteer"  # the join token the worker enrolled with


@dataclass(frozen=True)
class CreditEntry:
    """One line of the ledger.

    Attributes:
        entry_id: its number in the ledger, increasing (0 until it is stored).
        time_s: when it was written (the verdict's time).
        volunteer: the join token id the worker enrolled with ("" without one).
        work: the chunk's work (its kind's ``units_of_work``), negative in a correction.
        credit: the credit earned, negative in a correction.
        energy_j: the estimated energy spent, in joules, negative in a correction.
        gco2: the CO2 of that energy at the worker's grid intensity, in grams.
        gco2_blind: the CO2 it would have emitted under carbon-blind dispatch.
        energy_measured: whether the power behind ``energy_j`` was measured (RAPL) rather
            than declared or the pool's.
        zone: the worker's grid zone ("" if it gave none).
    """

    entry_id: int
    time_s: float
    worker_id: str
    volunteer: str
    job_id: str
    chunk_index: int
    work: float
    credit: float
    energy_j: float
    kind: EntryKind = EntryKind.GRANT
    gco2: float = 0.0
    gco2_blind: float = 0.0
    energy_measured: bool = False
    zone: str = ""


@dataclass(frozen=True)
class CreditPolicy:
    """The pool's credit settings.

    Attributes:
        watts_per_core: the power drawn by one busy core, for energy estimates of workers
            that gave no figure of their own.
        max_watts_per_core: the most a worker's own figure counts for: a volunteer's
            declared or measured power is believed up to this plausible bound, no further.
    """

    watts_per_core: float = 10.0
    max_watts_per_core: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.watts_per_core <= 1000:
            raise ValueError("watts_per_core must be between 0 and 1000")
        if not 0 <= self.max_watts_per_core <= 1000:
            raise ValueError("max_watts_per_core must be between 0 and 1000")

    def watts(self, own: float | None = None) -> float:
        """The watts per core a worker's energy is estimated with: its own figure (``own``)
        capped at :attr:`max_watts_per_core`, or the pool's without one."""
        if own is None:
            return self.watts_per_core
        return min(max(own, 0.0), self.max_watts_per_core)

    def energy_j(self, compute_s: float, own_watts: float | None = None) -> float:
        """Energy of one copy computed in ``compute_s`` seconds on one core of a worker
        whose own figure is ``own_watts`` (``None``: none, the pool's is used)."""
        return max(compute_s, 0.0) * self.watts(own_watts)


@dataclass(frozen=True)
class Contribution:
    """One agreeing copy of an accepted chunk: who computed it and in how long
    (``watts_per_core``: the worker's own figure, if it gave one, ``measured`` if from RAPL),
    and the grid intensities (gCO2/kWh) its energy is counted at, and would have been under
    carbon-blind dispatch."""

    worker_id: str
    volunteer: str
    compute_s: float
    watts_per_core: float | None = None
    measured: bool = False
    gco2_per_kwh: float = 0.0
    blind_gco2_per_kwh: float = 0.0
    zone: str = ""


def chunk_credit(work: float) -> float:
    """The credit an accepted chunk of ``work`` earns each agreeing copy: its work."""
    return float(work)


def grants(
    job_id: str,
    chunk_index: int,
    work: float,
    agreeing: Sequence[Contribution],
    now: float,
    policy: CreditPolicy,
) -> list[CreditEntry]:
    """The grants for an accepted chunk: one per agreeing copy (outvoted copies earn
    nothing, and are not passed in)."""
    credit = chunk_credit(work)
    entries = []
    for c in agreeing:
        energy_j = policy.energy_j(c.compute_s, c.watts_per_core)
        entries.append(
            CreditEntry(
                0,
                now,
                c.worker_id,
                c.volunteer,
                job_id,
                chunk_index,
                float(work),
                credit,
                energy_j,
                EntryKind.GRANT,
                grams(energy_j, c.gco2_per_kwh),
                grams(energy_j, c.blind_gco2_per_kwh),
                c.measured and c.watts_per_core is not None,
                c.zone,
            )
        )
    return entries


def withdrawal(entries: Iterable[CreditEntry], now: float) -> CreditEntry | None:
    """The correction that brings to zero what one worker holds for one chunk (its grants
    less what was already withdrawn), or ``None`` if nothing is left to withdraw."""
    held = list(entries)
    if not held:
        return None
    keys = {(e.worker_id, e.job_id, e.chunk_index) for e in held}
    if len(keys) != 1:
        raise ValueError("a withdrawal is for one worker's entries of one chunk")
    work = sum(e.work for e in held)
    credit = sum(e.credit for e in held)
    energy_j = sum(e.energy_j for e in held)
    if credit == 0 and work == 0 and energy_j == 0:
        return None
    return replace(
        held[0],
        entry_id=0,
        time_s=now,
        work=-work,
        credit=-credit,
        energy_j=-energy_j,
        kind=EntryKind.CORRECTION,
        gco2=-sum(e.gco2 for e in held),
        gco2_blind=-sum(e.gco2_blind for e in held),
    )


@dataclass(frozen=True)
class CreditTotal:
    """The ledger's sums for one worker or volunteer (``key``) over a period.

    Attributes:
        chunks: grants less corrections (chunks whose credit it keeps).
    """

    key: str
    chunks: int
    work: float
    credit: float
    energy_j: float
    #: CO2 of that energy at the grids' intensities, and under carbon-blind dispatch (g).
    gco2: float = 0.0
    gco2_blind: float = 0.0

    def payout_micros(self, rate_per_kwh: float) -> int:
        """What its energy is paid, at ``rate_per_kwh``, in millionths of the currency."""
        return round(self.energy_j / JOULES_PER_KWH * rate_per_kwh * MICROS)


def entry_key(entry: CreditEntry, by: Grouping) -> str:
    return entry.worker_id if by is Grouping.WORKER else entry.volunteer


def totals(entries: Iterable[CreditEntry], by: Grouping) -> list[CreditTotal]:
    """The entries summed per worker or volunteer, largest credit first (then by key)."""
    sums: dict[str, list[float]] = {}
    for e in entries:
        row = sums.setdefault(entry_key(e, by), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        row[0] += 1 if e.kind is EntryKind.GRANT else -1
        row[1] += e.work
        row[2] += e.credit
        row[3] += e.energy_j
        row[4] += e.gco2
        row[5] += e.gco2_blind
    found = [CreditTotal(k, int(r[0]), *r[1:]) for k, r in sums.items()]
    return sort_totals(found)


def sort_totals(found: Iterable[CreditTotal]) -> list[CreditTotal]:
    return sorted(found, key=lambda t: (-t.credit, t.key))


@dataclass(frozen=True)
class ZoneTotal:
    """The ledger's sums for the copies computed on one grid zone (``zone``)."""

    zone: str
    chunks: int
    energy_j: float
    energy_measured_j: float
    gco2: float
    gco2_blind: float


def zone_totals(entries: Iterable[CreditEntry]) -> list[ZoneTotal]:
    """The entries summed per grid zone, by zone."""
    sums: dict[str, list[float]] = {}
    for e in entries:
        row = sums.setdefault(e.zone, [0, 0.0, 0.0, 0.0, 0.0])
        row[0] += 1 if e.kind is EntryKind.GRANT else -1
        row[1] += e.energy_j
        row[2] += e.energy_j if e.energy_measured else 0.0
        row[3] += e.gco2
        row[4] += e.gco2_blind
    return [ZoneTotal(z, int(r[0]), *r[1:]) for z, r in sorted(sums.items())]


@dataclass(frozen=True)
class StatementLine:
    """One payee of a payout statement: its totals and what its energy is paid."""

    total: CreditTotal
    payout_micros: int

    @property
    def energy_kwh(self) -> float:
        return self.total.energy_j / JOULES_PER_KWH


def statement(
    found: Sequence[CreditTotal], rate_per_kwh: float
) -> tuple[list[StatementLine], StatementLine]:
    """A payout statement: a line per payee, and the total line, which is their sum
    (payouts are rounded per payee, in millionths, so the lines add up to the total
    exactly)."""
    if not 0 <= rate_per_kwh <= 1000:
        raise ValueError("rate_per_kwh must be between 0 and 1000")
    lines = [StatementLine(t, t.payout_micros(rate_per_kwh)) for t in found]
    total = CreditTotal(
        "",
        sum(t.chunks for t in found),
        sum(t.work for t in found),
        sum(t.credit for t in found),
        sum(t.energy_j for t in found),
        sum(t.gco2 for t in found),
        sum(t.gco2_blind for t in found),
    )
    return lines, StatementLine(total, sum(line.payout_micros for line in lines))

"""Request and response bodies of the ``/api/v1`` protocol, with their limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from hydracompute.core.carbon import MAX_DEADLINE_S, MAX_ZONE_CHARS, MIN_DEADLINE_S
from hydracompute.core.credit import MAX_OWN_WATTS_PER_CORE, MIN_OWN_WATTS_PER_CORE
from hydracompute.core.fairshare import MAX_PRIORITY, MAX_WEIGHT, MIN_PRIORITY, MIN_WEIGHT

LeaseId = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
KindName = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_-]*$")
#: Nesting allowed inside job parameters and chunk outputs: kinds take flat-ish JSON, and a
#: bound keeps every later walk over the value (validation, hashing, storing) cheap.
MAX_JSON_DEPTH = 8


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting at most ``limit + 1`` levels."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return depth


def _shallow(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


ShallowObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
LeaseIdItem = Annotated[str, LeaseId]
LabelItem = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
KindNameItem = Annotated[str, KindName]


class Strict(BaseModel):
    """Request bodies: unknown members refused, no type coercion (``"1"`` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class JobSubmit(Strict):
    kind: str = KindName
    params: ShallowObject = Field(default_factory=dict, max_length=64)
    name: str = Field("", max_length=200)
    target_chunk_s: float | None = Field(
        default=None,
        ge=0.01,
        le=3600,
        description="Seconds one chunk should take (default: pool's).",
    )
    replication: int | None = Field(
        default=None, ge=1, le=5, description="Copies of each chunk, by different workers."
    )
    quorum: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="Copies that must agree (default: all of two, a majority of more).",
    )
    adaptive: bool | None = Field(
        default=None,
        description="Adaptive verification (default: the pool's, unless replication is given).",
    )
    priority: int = Field(
        default=0,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="Among the submitter's own running jobs, higher runs first (default 0).",
    )
    required_labels: list[LabelItem] = Field(
        default_factory=list,
        max_length=16,
        description="Only workers the pool's admin gave all of these labels get its chunks.",
    )
    deadline_s: float | None = Field(
        default=None,
        ge=MIN_DEADLINE_S,
        le=MAX_DEADLINE_S,
        description="Seconds from submission by which it should be done (null: none).",
    )
    carbon: Literal["blind", "prefer-clean"] = Field(
        "blind",
        description="'prefer-clean': cleaner grids and hours within the deadline (needs one).",
    )


class ZoneEmissions(BaseModel):
    """What the copies computed on one grid zone drew and emitted."""

    zone: str = Field(description="The grid zone ('' for workers that gave none).")
    chunks: int = Field(description="Copies accepted, less corrections.")
    energy_kwh: float
    gco2: float


class Emissions(BaseModel):
    """Energy and CO2 of accepted copies, and the CO2 of carbon-blind dispatch."""

    energy_kwh: float
    energy_measured_kwh: float = Field(
        description="The part of the energy whose power was measured (RAPL), not estimated."
    )
    gco2: float = Field(description="At each worker's grid intensity when accepted.")
    gco2_blind: float = Field(
        description="The same energy at the pool's mean intensity when the job was submitted "
        "(carbon-blind dispatch); equal to gco2 for a carbon-blind job."
    )
    saved_share: float = Field(description="1 - gco2 / gco2_blind (0 when nothing was emitted).")
    zones: list[ZoneEmissions]


class ShareView(BaseModel):
    """A submitter's standing in the fair share of the pool."""

    owner: str = Field(description="The API key id of the submitter ('' without a key).")
    weight: float = Field(description="Its weight (1 unless an admin set another).")
    share: float = Field(
        description="The fraction of the pool it is entitled to now: its weight over the "
        "weights of every submitter with running jobs."
    )
    usage_s: float = Field(
        description="Its recent usage: core-seconds granted to its jobs, decayed with the "
        "pool's half-life."
    )
    usage_fraction: float = Field(description="Its part of every submitter's recent usage.")
    running_jobs: int


class ShareList(BaseModel):
    owners: list[ShareView]
    half_life_s: float = Field(description="The half-life of usage, in seconds.")


class JobView(BaseModel):
    job_id: str
    kind: str
    name: str
    state: str
    params: dict[str, Any]
    progress: float = Field(
        description="Fraction done, 0 to 1: of the work where the kind counts it (Mandelbrot: "
        "iterations), else of the units."
    )
    units_done: int
    total_units: int
    unit_name: str
    created_s: float = Field(description="Submission time, seconds since the Unix epoch.")
    finished_s: float | None
    elapsed_s: float
    error: str | None
    answer: dict[str, Any] | None
    live: dict[str, Any] = Field(description="The kind's summary of the results so far.")
    artefacts: list[str]
    work_name: str = Field(description="What the kind counts as work, e.g. 'samples'.")
    work_total: float
    work_done: float
    throughput: float = Field(description="Average work per second since submission.")
    eta_s: float | None = Field(description="Seconds left at that rate, if running.")
    replication: int = Field(1, description="Copies of each chunk, by different workers.")
    quorum: int = Field(1, description="Copies that must agree before a chunk is accepted.")
    adaptive: bool = Field(False, description="Adaptive verification.")
    reopened: int = Field(
        0,
        description="Times it ran again after finishing: outputs it had accepted came from a "
        "worker since found lying.",
    )
    waiting_reason: str | None = Field(
        default=None,
        description="Why a running job cannot progress now, e.g. 'no online worker has "
        "kind squares'; null when it can (and for finished jobs).",
    )
    priority: int = Field(0, description="Among its submitter's running jobs, higher first.")
    owner_share: ShareView | None = Field(
        default=None,
        description="Its submitter's share of the pool and recent usage (running jobs only).",
    )
    required_labels: list[str] = Field(
        default_factory=list, description="Labels a worker must carry to get its chunks."
    )
    deadline_s: float | None = Field(
        None, description="When it should be done, seconds since the epoch (null: none)."
    )
    carbon: str = Field("blind", description="'blind' or 'prefer-clean'.")
    emissions: Emissions | None = Field(
        default=None, description="Energy and CO2 so far (one job's view only; null in lists)."
    )


class JobList(BaseModel):
    jobs: list[JobView]


#: A worker's own power per busy core, declared by its owner or measured (see credit.md).
WattsPerCore = Field(
    None,
    ge=MIN_OWN_WATTS_PER_CORE,
    le=MAX_OWN_WATTS_PER_CORE,
    description="Watts drawn by one busy core, for energy estimates; null: the pool's figure.",
)


#: Whether that figure was measured from the machine's energy counters (RAPL).
PowerMeasured = Field(False, description="watts_per_core was measured (RAPL), not declared.")
#: The worker's electricity grid.
GridZone = Field(
    "",
    max_length=MAX_ZONE_CHARS,
    pattern=r"^([A-Za-z][A-Za-z0-9_-]*)?$",
    description="Its grid: an ISO country code or an Electricity Maps zone ('' unknown).",
)


class WorkerEnrol(Strict):
    join_token: str = Field(max_length=200, description="A join token from the pool's admin.")
    name: str = Field(min_length=1, max_length=200)
    cores: int = Field(ge=1, le=1024)
    kinds: list[KindNameItem] = Field(min_length=1, max_length=100)
    version: str = Field("", max_length=40)
    watts_per_core: float | None = WattsPerCore
    power_measured: bool = PowerMeasured
    grid_zone: str = GridZone


class WorkerProfile(Strict):
    """What a worker that starts again has now (its owner may have changed them)."""

    cores: int = Field(ge=1, le=1024)
    kinds: list[KindNameItem] = Field(min_length=1, max_length=100)
    version: str = Field("", max_length=40)
    watts_per_core: float | None = WattsPerCore
    power_measured: bool = PowerMeasured
    grid_zone: str = GridZone


class Rejoined(BaseModel):
    worker_id: str
    heartbeat_s: float
    lease_ttl_s: float
    max_wait_s: float


class Enrolled(BaseModel):
    worker_id: str
    secret: str = Field(description="Send as 'Authorization: Bearer <secret>'; shown once.")
    heartbeat_s: float
    lease_ttl_s: float
    max_wait_s: float


class ResultIn(Strict):
    """One chunk's result: exactly one of ``output`` (computed) and ``error`` (failed)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "title": "a computed chunk",
                    "required": ["output"],
                    "properties": {"output": {"type": "object"}, "error": {"type": "null"}},
                },
                {
                    "title": "a failed chunk",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "output": {"type": "null"}},
                },
            ]
        }
    )

    lease_id: str = LeaseId
    compute_s: float = Field(0.0, ge=0, le=10**6)
    output: ShallowObject | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _output_or_error(self) -> Self:
        if (self.output is None) == (self.error is None):
            raise ValueError("a result has exactly one of output and error")
        return self


class ExchangeIn(Strict):
    results: list[ResultIn] = Field(default_factory=list, max_length=256)
    running: list[LeaseIdItem] = Field(default_factory=list, max_length=4096)
    want: int = Field(0, ge=0, le=256)
    state: Literal["running", "paused"] = Field(
        "running", description="'paused' while the owner's rules keep the worker from computing."
    )
    state_reason: str = Field("", max_length=200, description="Why, e.g. 'on battery'.")
    wait_s: float = Field(0.0, ge=0, le=600, description="Hold the request this long for work.")


class ChunkRange(BaseModel):
    index: int
    start: int
    stop: int


class LeaseOut(BaseModel):
    lease_id: str
    job_id: str
    kind: str
    params: dict[str, Any]
    chunk: ChunkRange
    deadline_in_s: float


class ExchangeOut(BaseModel):
    accepted: list[str]
    leases: list[LeaseOut]
    abandon: list[str]
    next_exchange_s: float = Field(description="Come back at the latest after this long.")
    grid_gco2_per_kwh: float | None = Field(
        None,
        description="The carbon intensity of the worker's grid now, from the pool's source "
        "(absent when it gave no zone): what its owner's --max-grid-intensity compares.",
    )


class Left(BaseModel):
    returned: int = Field(description="Leases given back to the pool.")


class LeaseReturn(Strict):
    lease_ids: list[LeaseIdItem] = Field(
        max_length=4096, description="Leases of this worker to give back to the pool."
    )


class Returned(BaseModel):
    returned: int = Field(description="Leases that were still active and are now returned.")


class WorkerView(BaseModel):
    worker_id: str
    name: str
    cores: int
    kinds: list[str]
    online: bool
    revoked: bool
    left: bool = Field(description="Signed off (it stopped, or gave up while stopping).")
    state: str = Field(
        description="What the worker is: 'revoked', 'left' (signed off), 'offline' (not "
        "seen for a lease's lifetime), else what it reports: 'paused' by its owner's "
        "rules, or 'running'."
    )
    state_reason: str = Field(description="Why it is paused, in the worker's words.")
    last_seen_s: float = Field(description="When it last made a request, seconds since the epoch.")
    last_seen_ago_s: float = Field(description="How long ago that was, by the coordinator's clock.")
    chunks_done: int
    leases: int
    speeds: dict[str, float] = Field(description="Work units per second per core, per kind.")
    barred: str = Field("", description="Why it was barred for wrong outputs ('' if not).")
    trust: dict[str, int] = Field(
        default_factory=dict, description="Confirmed outputs in a row, per kind."
    )
    labels: list[str] = Field(
        default_factory=list, description="Labels the pool's admin gave it ('trusted'...)."
    )
    accepts_wasm: bool = Field(
        False, description="Its owner consented to run submitted code (wasm jobs)."
    )
    grid_zone: str = Field("", description="Its grid zone ('' if it gave none).")
    grid_gco2_per_kwh: float | None = Field(
        None, description="Its grid's carbon intensity now (null: no source or no zone)."
    )
    version: str = Field(
        "", description="The Hydra Compute version it runs ('' if it did not say)."
    )


class WorkerLabels(Strict):
    add: list[LabelItem] = Field(default_factory=list, max_length=16)
    remove: list[LabelItem] = Field(default_factory=list, max_length=16)


class BlobStored(BaseModel):
    sha256: str
    size: int = Field(description="Bytes.")


class WorkerList(BaseModel):
    workers: list[WorkerView]


class Health(BaseModel):
    status: str
    version: str
    kinds: list[str]
    jobs_running: int
    workers_online: int


ShareWeight = Field(
    default=1.0,
    ge=MIN_WEIGHT,
    le=MAX_WEIGHT,
    description="The key's weight in the fair share between submitters (default 1).",
)


class CoordinatorView(BaseModel):
    """One live coordinator of the pool (they share one database)."""

    url: str
    started_s: float
    seen_s: float
    #: Whether it is the coordinator that answered.
    this: bool


class CoordinatorList(BaseModel):
    coordinators: list[CoordinatorView]


class KeyCreate(Strict):
    name: str = Field("", max_length=200)
    role: str = Field(pattern="^(admin|submitter|viewer)$")
    expires_in_s: float | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    weight: float = ShareWeight


class KeyWeight(Strict):
    weight: float = ShareWeight


class TokenCreate(Strict):
    name: str = Field("", max_length=200)
    expires_in_s: float | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    max_uses: int | None = Field(default=None, ge=1, le=10**6)


class CredentialView(BaseModel):
    id: str
    name: str
    role: str | None = Field(description="API keys only.")
    weight: float | None = Field(
        default=None, description="API keys only: weight in the fair share between submitters."
    )
    created_s: float
    expires_s: float | None
    max_uses: int | None = Field(description="Join tokens only; null means unlimited.")
    uses: int
    revoked: bool


class CredentialIssued(CredentialView):
    secret: str = Field(description="The key or token itself; shown only this once.")


class CredentialList(BaseModel):
    credentials: list[CredentialView]


class CreditLine(BaseModel):
    """One payee of a credit statement (``key``: a worker id, or a join token id)."""

    key: str
    name: str
    chunks: int
    work: float
    credit: float
    energy_j: float
    energy_kwh: float
    payout: float
    #: The payout in millionths of the currency: the lines' sum is the total's, exactly.
    payout_micros: int
    #: CO2 of that energy at the grids' intensities, and under carbon-blind dispatch (g).
    gco2: float = 0.0
    gco2_blind: float = 0.0


class WorkerCredit(BaseModel):
    """A worker's own credit: what the ledger holds for it, net of corrections."""

    worker_id: str
    chunks: int
    work: float
    credit: float
    energy_kwh: float


class LeaderboardEntry(BaseModel):
    """One volunteer (join token) on the leaderboard."""

    #: The join token's id ("" for workers enrolled without one): its page's address.
    key: str
    name: str
    chunks: int
    credit: float
    energy_kwh: float
    #: Its share of the pool's credit, 0–1.
    share: float


class Leaderboard(BaseModel):
    """Volunteers by credit earned for verified work, largest first."""

    volunteers: list[LeaderboardEntry]
    total_credit: float


class VolunteerWorker(BaseModel):
    """One of a volunteer's workers, with the credit it holds (net of corrections)."""

    worker_id: str
    name: str
    cores: int
    online: bool
    barred: str
    #: The power per busy core it gave, declared or measured (null: none, the pool's is
    #: used); the ledger believes it up to the pool's bound.
    watts_per_core: float | None
    chunks: int
    credit: float
    energy_kwh: float


class VolunteerEntry(BaseModel):
    """One ledger entry of a volunteer: a grant, or a correction withdrawing one."""

    entry_id: int
    time_s: float
    kind: Literal["grant", "correction"]
    worker_id: str
    worker_name: str
    job_id: str
    chunk_index: int
    work: float
    credit: float
    energy_j: float


class VolunteerView(BaseModel):
    """A volunteer (join token): its totals, share of the pool, workers and latest entries."""

    key: str
    name: str
    chunks: int
    work: float
    credit: float
    energy_kwh: float
    #: Its share of the pool's credit, 0–1.
    share: float
    total_credit: float
    workers: list[VolunteerWorker]
    #: Its latest ledger entries, newest first (at most ``entries`` of the request).
    entries: list[VolunteerEntry]


class CreditStatement(BaseModel):
    """The credit ledger summed per worker or volunteer over ``[since_s, until_s)``."""

    by: Literal["worker", "volunteer"]
    since_s: float | None
    until_s: float | None
    rate_per_kwh: float
    watts_per_core: float
    lines: list[CreditLine]
    total: CreditLine


class ZoneView(BaseModel):
    """One grid zone of the pool: its intensity now and ahead, and where chunks went."""

    zone: str
    gco2_per_kwh: float = Field(description="Its intensity now.")
    origin: str = Field(description="Where that comes from: the source, or 'annual'.")
    forecast: list[tuple[float, float]] = Field(
        description="[[time_s, gCO2/kWh]] over the next 24 h, as the source expects it."
    )
    workers_online: int
    cores_online: int
    chunks: int = Field(description="Copies accepted from its workers (ledger, all time).")
    gco2: float


class CarbonView(BaseModel):
    """The pool's grids (``GET /api/v1/carbon``)."""

    source: str = Field(description="The coordinator's --carbon-source ('none' without one).")
    zones: list[ZoneView]
    gco2: float = Field(description="CO2 of every accepted copy (g).")
    gco2_blind: float = Field(description="The same under carbon-blind dispatch (g).")


class SessionStart(Strict):
    api_key: str = Field(min_length=1, max_length=200)


class SessionView(BaseModel):
    signed_in: bool = True
    key_id: str
    role: str
    csrf_token: str | None = Field(
        default=None,
        description="Send as X-CSRF-Token with changes made through the session cookie.",
    )
    expires_s: float | None = None


class KindField(BaseModel):
    name: str
    type: str
    label: str
    required: bool
    default: Any
    minimum: float | None
    maximum: float | None
    choices: list[str]
    help: str


class KindView(BaseModel):
    name: str
    unit_name: str
    work_name: str
    work_per_unit: float = Field(description="Work in a typical unit (speeds × this).")
    fields: list[KindField] = Field(description="Parameters for a form; empty: raw JSON.")


class KindList(BaseModel):
    kinds: list[KindView]


class PoolView(BaseModel):
    workers_total: int
    workers_online: int
    workers_paused: int
    cores_online: int
    jobs_running: int
    throughput: dict[str, float] = Field(description="Work per second per kind, lately.")
    work_names: dict[str, str]
    history: list[dict[str, Any]] = Field(description="[{t, throughput: {kind: work/s}}]")
    workers: list[WorkerView] = Field(description="Online workers first; at most `limit`.")


class PreviewOut(BaseModel):
    png: str = Field(description="A PNG image, base64-encoded.")
    pieces: list[tuple[int, int, int, int, int, int]] = Field(
        description="[x, y, width, height, at_x, at_y]: the rectangle of the PNG at (x, y) "
        "is drawn at (at_x, at_y) in the job's picture, pixel for pixel."
    )

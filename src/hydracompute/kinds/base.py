"""The job-kind interface: the unit of extension.

A *job kind* knows everything about one sort of work and nothing about networks or
databases. The coordinator and the workers only ever call the methods below:

- ``validate(params)`` turns user parameters into canonical ones (or raises
  :class:`~hydracompute.errors.InvalidParams`); ``plan(params)`` optionally completes them,
  once when the job is submitted, with choices the kind makes for the job (Mandelbrot's
  tile side, from the view's estimated cost);
- ``total_units(params)`` says how many *work units* the job has; a chunk is a half-open
  range ``[start, stop)`` of units, so the scheduler can carve chunks of any size;
- ``compute(params, start, stop)`` runs the kernel on one chunk and returns its *output*,
  a JSON-serialisable dict (this is what travels back to the coordinator); a kind whose
  chunks need files from the coordinator (a WebAssembly module, an input) names them by
  SHA-256 in ``blobs(params)``, and the worker, having fetched and checked them, calls
  ``compute_files(params, start, stop, files, cache_dir)`` instead;
- ``check(params, start, stop, output)`` rejects outputs that cannot be right
  (a volunteer is untrusted);
- ``same_output(a, b)`` compares two outputs of the same chunk (verification by replication);
- ``merge(params, outputs)`` builds the job's answer and artefacts from all chunk outputs;
- ``fold_live(params, live, output)`` optionally folds each accepted output into a small
  live summary (π's running estimate, say), kept with the job for progress displays
  (``fold_live_chunk`` is the same with the chunk's unit range, for a summary that needs it);
- ``unit_costs(params)`` optionally estimates what each unit costs, when units differ
  (Mandelbrot tiles): chunks are then sized in estimated cost, not in units, and
  ``work_done(params, live)`` may count progress in work rather than in units;
  ``max_units(params)`` bounds a chunk of one job (``max_chunk_units`` by default), for a
  kind whose units differ in size from job to job.

Kinds register through the ``hydracompute.kinds`` entry-point group, the built-in ones
exactly like a third-party kind would.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from hydracompute.kinds.costs import UnitCosts

JSON = dict[str, Any]


@dataclass(frozen=True)
class ChunkOutput:
    """One chunk's output as stored by the coordinator: its unit range and payload."""

    start: int
    stop: int
    output: JSON


@dataclass(frozen=True)
class Artefact:
    """A downloadable product of a finished job (a PNG, a raw array...)."""

    media_type: str
    data: bytes


@dataclass(frozen=True)
class ArtefactStream:
    """An artefact produced piece by piece (see :meth:`JobKind.render_stream`): its media
    type and an iterator of its bytes, to be consumed once."""

    media_type: str
    pieces: Iterator[bytes]


@dataclass(frozen=True)
class Answer:
    """A finished job's answer: a small JSON summary and named artefacts."""

    summary: JSON
    artefacts: Mapping[str, Artefact] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamField:
    """One parameter as a form shows it; validation stays in :meth:`JobKind.validate`."""

    name: str
    #: "integer", "number", "string", "choice", "json" (an object), or "blob": a file the
    #: form uploads (``PUT /api/v1/blobs/{sha256}``), sending its SHA-256 as the value.
    type: str
    label: str = ""
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


#: ``(x, y, width, height, at_x, at_y)``: the rectangle of a preview's PNG at ``(x, y)``
#: is drawn at ``(at_x, at_y)`` in the job's picture, pixel for pixel.
PreviewPiece = tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class Preview:
    """A picture of one chunk's output: a PNG and the pieces of it that go into the job's
    picture (a chunk's pixels need not form one rectangle there)."""

    png: bytes
    pieces: tuple[PreviewPiece, ...]


class JobKind(abc.ABC):
    """Base class of every job kind.

    Subclasses set the class attributes and implement the abstract methods. Every method
    must be deterministic and free of I/O: the same arguments give the same result on
    every machine.
    """

    #: Registry name, e.g. ``"pi"``; lower-case letters, digits, ``-`` and ``_``.
    name: ClassVar[str]
    #: Human name of one work unit, for progress displays (e.g. ``"block"``).
    unit_name: ClassVar[str] = "unit"
    #: Size of the first chunk a worker gets before its speed is known.
    probe_units: ClassVar[int] = 1
    #: Upper bound on one chunk, whatever the worker's speed (bounds memory and payloads);
    #: see :meth:`max_units` for a bound that depends on the job.
    max_chunk_units: ClassVar[int] = 1 << 20
    #: Work (see :meth:`units_of_work`) in a typical unit, to show speeds in work per second.
    #: Speeds are learnt in typical units per second: with :meth:`unit_costs`, a unit of
    #: cost 1.0 is a typical one.
    work_per_unit: ClassVar[float] = 1.0
    #: Its chunks run code the submitter sent (a WebAssembly module): workers offer such
    #: kinds only with their owner's consent, and a pool's admin says who may submit them.
    runs_submitted_code: ClassVar[bool] = False
    #: Roles of :meth:`blobs` the coordinator shows :meth:`check_blob` at submission.
    checked_blobs: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def validate(self, params: Mapping[str, Any]) -> JSON:
        """Return canonical parameters.

        Raises:
            InvalidParams: a parameter is missing, unknown, of the wrong type or out of
                range; ``errors`` maps each offending field to a message.
        """

    def plan(self, params: JSON) -> JSON:
        """Canonical parameters completed with the choices the kind makes for this job,
        called once by the coordinator when the job is submitted (after :meth:`validate`);
        what it returns is stored and sent to workers. The default chooses nothing.

        For choices that depend on more than the user gave and would cost too much to make
        on every :meth:`validate` (each worker validates every chunk's parameters):
        Mandelbrot picks its tile side from an estimate of the view's cost. It must return
        parameters that :meth:`validate` returns unchanged, and give them back unchanged
        when they already hold its choices; parameters that lack them must keep their
        meaning (a job stored before the kind made the choice).
        """
        return params

    @abc.abstractmethod
    def total_units(self, params: JSON) -> int:
        """Number of work units of a job with these (canonical) parameters; at least 1."""

    @abc.abstractmethod
    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        """Run the kernel on units ``[start, stop)`` and return the chunk's output."""

    def blobs(self, params: JSON) -> dict[str, str]:
        """The content-addressed files a chunk of this job needs, by role (``"module"``,
        ``"input"``...): their SHA-256 in lower-case hex. None by default.

        The coordinator refuses a job whose blobs it does not hold; a worker fetches each
        once, checks its hash, and passes the local files to :meth:`compute_files`.
        """
        return {}

    def check_blob(self, params: JSON, role: str, data: bytes) -> None:  # noqa: B027 - optional
        """Refuse the blob of ``role`` (one of :attr:`checked_blobs`) if it cannot serve
        this job — a module that breaks the ABI, say. The coordinator calls it, off its
        store thread, when the job is submitted; it must only read ``data``.

        Raises:
            InvalidParams: the blob is unusable; the error names the role.
        """

    def compute_files(
        self,
        params: JSON,
        start: int,
        stop: int,
        files: Mapping[str, Path],
        cache_dir: Path | None,
    ) -> JSON:
        """:meth:`compute` with the files :meth:`blobs` names, by role, already fetched and
        checked by the worker, and a folder the kind may keep its own cache in (``None``:
        none). By default the files are not needed: :meth:`compute` runs."""
        return self.compute(params, start, stop)

    @abc.abstractmethod
    def check(self, params: JSON, start: int, stop: int, output: JSON) -> None:
        """Raise :class:`~hydracompute.errors.InvalidResult` if ``output`` cannot be right."""

    def same_output(self, params: JSON, a: JSON, b: JSON) -> bool:
        """Whether two outputs of the same chunk agree (bit-identical by default)."""
        return a == b

    @abc.abstractmethod
    def merge(self, params: JSON, outputs: Iterable[ChunkOutput]) -> Answer:
        """Build the answer from the outputs of every chunk (covering all units once)."""

    def answer_from_live(self, params: JSON, live: JSON) -> Answer | None:
        """The answer, made from the live summary once every unit is in, if it can be:
        :meth:`merge` then never runs, and finishing a job does not read its outputs (for a
        job of a million chunks, seconds during which no exchange is answered). It must
        equal what :meth:`merge` would give. ``None`` (the default): :meth:`merge` runs.
        """
        return None

    def render(self, params: JSON, outputs: Iterable[ChunkOutput], name: str) -> Artefact | None:
        """Build the artefact ``name`` of a finished job from its outputs, on its first
        download (then it is stored); ``None`` if the kind makes no such artefact.

        For artefacts too costly to build as the job finishes (a large image, say): the job
        is done, and its answer returned, as soon as :meth:`merge` has made the summary.
        Artefacts that :meth:`merge` returns are stored at once and never rendered.
        """
        return None

    def render_stream(
        self, params: JSON, outputs: Iterable[ChunkOutput], name: str, scratch: BinaryIO
    ) -> ArtefactStream | None:
        """Like :meth:`render`, but the artefact comes out piece by piece, so that one
        larger than memory should hold can be produced: this is what the coordinator calls.

        ``outputs`` may be read (once) lazily, one output at a time; ``scratch`` is an empty
        temporary file the kind may use as room (the only I/O a kind does, on a file it is
        given). The pieces are produced as the iterator is consumed. The default renders
        with :meth:`render`, all in memory.
        """
        artefact = self.render(params, outputs, name)
        if artefact is None:
            return None
        return ArtefactStream(artefact.media_type, iter((artefact.data,)))

    def fold_live(self, params: JSON, live: JSON, output: JSON) -> JSON:
        """The job's live summary once ``output`` (already checked) is accepted.

        Called once per accepted chunk, in no particular chunk order, starting from ``{}``;
        keep the summary small (it is stored with the job and sent with every status).
        Return a new summary rather than change ``live``: an exchange that is refused later
        must leave the summary it was given as it was.
        """
        return live

    def fold_live_chunk(
        self, params: JSON, live: JSON, start: int, stop: int, output: JSON
    ) -> JSON:
        """:meth:`fold_live` for the output of units ``[start, stop)``: what the coordinator
        calls. By default the range is not needed. A kind with :meth:`unit_costs` may keep
        here the estimated work of the accepted units (see :meth:`work_estimated`)."""
        return self.fold_live(params, live, output)

    def param_fields(self) -> list[ParamField]:
        """The parameters a submission form should offer (none: the form takes raw JSON)."""
        return []

    def preview(self, params: JSON, start: int, stop: int, output: JSON) -> Preview | None:
        """A picture of one chunk's output whose pieces, drawn where they go, are pixel for
        pixel the final picture's; ``None`` (the default) if the kind draws no picture."""
        return None

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Compile or load the kernels; called once in each compute process at start."""

    def unit_costs(self, params: JSON) -> UnitCosts | None:
        """What each unit of a job is expected to cost, in typical units (a unit of cost 1.0
        holds ``work_per_unit`` work), when units differ in cost; ``None`` (the default)
        when they cost about the same.

        The coordinator then sizes chunks in estimated cost: each chunk about the target
        time for its worker, the last ones of a job finishing together. It must be a pure
        function of the parameters (several coordinators sharing one database must agree
        without storing it), computed in well under a second, and cached by the kind: it is
        asked for on every chunk carved and every progress display. Only the *relative*
        costs matter for balance (a uniform error is learnt into the workers' speeds).
        """
        return None

    def max_units(self, params: JSON) -> int:
        """The most units one chunk of this job may hold, whatever the worker's speed:
        :attr:`max_chunk_units` by default. A kind whose units differ in size from job to
        job (Mandelbrot's tiles of 64, 32 or 16 pixels a side) bounds a chunk's memory and
        payload here; the coordinator never carves more, and a worker refuses more."""
        return self.max_chunk_units

    def min_worker_version(self, params: JSON) -> str:
        """The oldest Hydra Compute version whose workers compute a job of these
        parameters (``""``, the default: any). A kind that gains a parameter names here
        the version that brought it, for jobs that use it: older workers, which would
        refuse them, are not given their chunks. Asked for each running job a worker might
        take, on every exchange: keep it cheap."""
        return ""

    def units_of_work(self, params: JSON, start: int, stop: int) -> float:
        """Elementary operations in a chunk (samples, iterations...), for throughput figures;
        also what an accepted chunk earns each agreeing worker in credit (docs/credit.md):
        count the kind's real work, deterministically and cheaply. A kind with
        :meth:`unit_costs` counts ``work_per_unit`` per unit of cost by default."""
        costs = self.unit_costs(params)
        if costs is not None:
            return costs.cost(start, stop) * self.work_per_unit
        return float(stop - start)

    def total_work(self, params: JSON) -> float:
        """Elementary operations in the whole job (cheap: asked for every progress display)."""
        return self.units_of_work(params, 0, self.total_units(params))

    def work_done(self, params: JSON, live: JSON) -> float | None:
        """Work of the accepted outputs as the live summary (:meth:`fold_live`) counts it,
        for progress, throughput and the ETA; ``None`` (the default): the share of
        :meth:`total_work` that the accepted units hold is shown. A kind whose units differ
        in cost counts its real work here, so that the ETA stays right when the dear units
        come last."""
        return None

    def work_estimated(self, params: JSON, live: JSON) -> float | None:
        """The *estimated* work (what :meth:`units_of_work` gives) of the units whose real
        work :meth:`work_done` counts, as the live summary keeps it (see
        :meth:`fold_live_chunk`); ``None`` (the default) when it is not kept.

        With both, the job's progress learns from its finished chunks: the work left is the
        estimate of the units left, scaled by how the real work of the accepted units
        compared with their estimate (see :mod:`hydracompute.core.progress`). Everything
        it reads is stored with the job, so every coordinator shows the same."""
        return None

    def work_name(self) -> str:
        """Name of the elementary operation counted by :meth:`units_of_work`."""
        return self.unit_name

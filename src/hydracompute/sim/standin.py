"""Stand-in kinds: a real kind's units, sizes and credit, with an answer that costs nothing.

Virtual workers do not run kernels. A :class:`StandInKind` takes the name, parameters,
unit count, chunk bounds and work per unit of the real kind it stands for, so the
coordinator's sizing, leases and credit see the same numbers as with the real kind; its
output is a number derived from the chunk's range and the job's parameters
(:func:`true_value`), which the simulator can check after the run to count the wrong
outputs that were accepted. Like a real kind's check, :meth:`StandInKind.check` cannot
tell a plausible lie (a wrong number) from the truth: only verification by replication
can, exactly as with π's hit counts or Mandelbrot's iteration counts.

How long a chunk takes is the simulator's business (:func:`unit_costs`): π's blocks all cost
the same; Mandelbrot's tiles cost what the real kernel spends on them, estimated from a
coarse render of the picture, or counted exactly (a job's ``tile_costs = "exact"``: the
whole picture rendered once, seconds to minutes of CPU). The stand-in passes on the real
kind's own cost estimate (:meth:`StandInKind.unit_costs`), so the simulated coordinator
sizes chunks as the real one does, from an estimate that differs from the simulated truth
as the real estimate differs from the real kernel.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from hydracompute.errors import InvalidResult
from hydracompute.kinds import Answer, ChunkOutput, JobKind, KindRegistry
from hydracompute.kinds.base import JSON
from hydracompute.kinds.costs import UnitCosts

#: The stand-in's outputs are taken modulo this (they fit a JSON integer anywhere).
MODULUS = (1 << 61) - 1


def job_key(params: JSON) -> int:
    """A number that differs between jobs of different parameters."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def true_value(key: int, start: int, stop: int) -> int:
    """The right output of units ``[start, stop)`` of the job with :func:`job_key` ``key``:
    a sum over the units, so that the job's answer does not depend on its chunking."""
    count = stop - start
    # Σ (key + u·u_mix) over u in [start, stop), modulo a prime: O(1) for any chunk.
    unit_sum = (start + stop - 1) * count // 2
    return (key * count + unit_sum * 0x9E3779B97F4A7C15) % MODULUS


class StandInKind(JobKind):
    """Stands for ``real``: same name, parameters, units, probe and chunk bounds, and work
    per unit (so the same credit); a cheap, checkable output."""

    def __init__(self, real: JobKind) -> None:
        self.real = real
        # Instance attributes shadow the class's: the stand-in answers to the real name.
        self.name = real.name  # type: ignore[misc]
        self.unit_name = real.unit_name  # type: ignore[misc]
        self.probe_units = real.probe_units  # type: ignore[misc]
        self.max_chunk_units = real.max_chunk_units  # type: ignore[misc]
        self.work_per_unit = real.work_per_unit  # type: ignore[misc]
        self._keys: dict[str, int] = {}

    def key(self, params: JSON) -> int:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"))
        found = self._keys.get(text)
        if found is None:
            found = self._keys[text] = job_key(params)
        return found

    def validate(self, params: Mapping[str, Any]) -> JSON:
        return self.real.validate(params)

    def plan(self, params: JSON) -> JSON:
        return self.real.plan(params)

    def max_units(self, params: JSON) -> int:
        return self.real.max_units(params)

    def total_units(self, params: JSON) -> int:
        return self.real.total_units(params)

    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        return {"value": true_value(self.key(params), start, stop)}

    def check(self, params: JSON, start: int, stop: int, output: JSON) -> None:
        value = output.get("value")
        if len(output) != 1 or type(value) is not int or not 0 <= value < MODULUS:
            raise InvalidResult("a stand-in output has exactly one field, value, an integer")

    def fold_live(self, params: JSON, live: JSON, output: JSON) -> JSON:
        return {"value": (int(live.get("value", 0)) + int(output["value"])) % MODULUS}

    def merge(self, params: JSON, outputs: Iterable[ChunkOutput]) -> Answer:
        total = sum(int(o.output["value"]) for o in outputs) % MODULUS
        return Answer(summary={"value": total})

    def answer_from_live(self, params: JSON, live: JSON) -> Answer | None:
        return Answer(summary={"value": int(live.get("value", 0))})

    def unit_costs(self, params: JSON) -> UnitCosts | None:
        return self.real.unit_costs(params)

    def units_of_work(self, params: JSON, start: int, stop: int) -> float:
        return self.real.units_of_work(params, start, stop)

    def total_work(self, params: JSON) -> float:
        return self.real.total_work(params)


def standin_registry(real: KindRegistry, names: Iterable[str]) -> KindRegistry:
    """A registry of stand-ins for the kinds ``names`` of ``real``.

    Raises:
        UnknownKind: a name is not a kind of ``real``.
    """
    registry = KindRegistry()
    for name in sorted(set(names)):
        registry.register(StandInKind(real.get(name)))
    return registry


#: Samples per tile side of the coarse render that estimates Mandelbrot tile costs.
COARSE_SAMPLES = 4
#: Work of one pixel beyond its iterations (writing it, the loop around it), in iterations.
PIXEL_OVERHEAD_ITERATIONS = 4.0
#: Tiles whose cost is estimated at most (a larger picture is sampled more coarsely).
MAX_COST_SAMPLES = 1 << 22


def unit_costs(kind: JobKind, params: JSON, exact: bool = False) -> npt.NDArray[np.float64] | None:
    """Relative cost of each unit of a job, normalised to a mean of 1, or ``None`` when
    every unit costs the same (π's blocks); ``exact``: Mandelbrot's tiles counted from a
    render of the whole picture, not from a coarse one."""
    if kind.name != "mandelbrot":
        return None
    if exact:
        key = json.dumps(params, sort_keys=True, separators=(",", ":"))
        return _exact_tile_costs(key, mandelbrot_tile_side(params))
    from hydracompute.kinds import mandelbrot
    from hydracompute.kinds.mandelbrot_kernel import render_tile

    tile = mandelbrot.tile_side(params)
    cols, rows = -(-params["width"] // tile), -(-params["height"] // tile)
    side = COARSE_SAMPLES
    while cols * rows * side * side > MAX_COST_SAMPLES and side > 1:
        side //= 2
    counts = render_tile(
        params["x_min"],
        params["x_max"],
        params["y_min"],
        params["y_max"],
        cols * side,
        rows * side,
        params["max_iter"],
        0,
        0,
        cols * side,
        rows * side,
    ).astype(np.float64)
    per_tile = counts.reshape(rows, side, cols, side).sum(axis=(1, 3)) / (side * side)
    per_tile += PIXEL_OVERHEAD_ITERATIONS
    total = cols * rows
    # Unit u is tile u·stride mod total, numbered row-major (the kind's own rule).
    order = np.arange(total, dtype=np.int64) * mandelbrot.tile_stride(total) % total
    costs = per_tile.ravel()[order]
    return np.asarray(costs / costs.mean(), dtype=np.float64)


def mandelbrot_tile_side(params: JSON) -> int:
    from hydracompute.kinds import mandelbrot

    return mandelbrot.tile_side(params)


def _exact_tile_costs(key: str, tile: int) -> npt.NDArray[np.float64]:
    from hydracompute.kinds import mandelbrot

    per_tile = exact_tile_iterations(key, tile)
    total = per_tile.size
    order = np.arange(total, dtype=np.int64) * mandelbrot.tile_stride(total) % total
    costs = per_tile[order]
    return np.asarray(costs / costs.mean(), dtype=np.float64)


@functools.lru_cache(maxsize=4)
def exact_tile_iterations(key: str, tile: int) -> npt.NDArray[np.float64]:
    """Every tile's iterations (and :data:`PIXEL_OVERHEAD_ITERATIONS` a pixel), tiles of
    ``tile`` pixels a side numbered row-major, from the real kernel; ``key`` is the job's
    parameters as JSON with sorted keys. Cached: a simulation bench runs the same picture
    several times, and a large one costs minutes."""
    from hydracompute.kinds.mandelbrot_kernel import render_tile

    params = json.loads(key)
    width, height = params["width"], params["height"]
    x_min, x_max, y_min, y_max = (float(params[k]) for k in ("x_min", "x_max", "y_min", "y_max"))
    cols, rows = -(-width // tile), -(-height // tile)
    per_tile = np.empty(cols * rows)
    for row in range(rows):
        # A band of tiles at a time: a whole 16384² picture would be a gigabyte of counts.
        h = min(tile, height - row * tile)
        band = render_tile(
            x_min, x_max, y_min, y_max, width, height, params["max_iter"], 0, row * tile, width, h
        )
        sums = np.add.reduceat(band.sum(axis=0, dtype=np.float64), np.arange(0, width, tile))
        widths = np.minimum(tile, width - np.arange(0, width, tile))
        per_tile[row * cols : (row + 1) * cols] = sums + PIXEL_OVERHEAD_ITERATIONS * widths * h
    return per_tile

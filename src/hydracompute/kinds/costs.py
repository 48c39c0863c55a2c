"""Unit costs: what a range of a job's units is expected to cost, for kinds whose units differ.

The scheduler sizes chunks in *cost*, not in units (see :func:`hydracompute.core.sizing.
chunk_units`): a worker's speed is learnt in cost per second, a chunk gets about
``speed × target`` of it, and the tail of a job shares out the cost left. Cost is counted
in *typical units*: a unit of cost 1.0 is worth the kind's ``work_per_unit`` of work. For a
kind whose units all cost the same every unit costs 1.0, and every figure is the one it was
in units. A kind whose units differ (a Mandelbrot tile inside the set costs thousands of
times one outside) returns a :class:`UnitCosts` from
:meth:`hydracompute.kinds.base.JobKind.unit_costs`; README.md ("Writing your own job kind")
tells plug-in authors how.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: No unit is estimated to cost less than this, in typical units: a chunk's cost never
#: comes out zero, and a speed learnt from it never infinite.
MIN_UNIT_COST = 1e-6


class UnitCosts:
    """The estimated cost of each of a job's units, with prefix sums for ranges.

    ``costs`` is ``None`` when every unit costs 1.0 (nothing is stored); otherwise it has
    one non-negative finite entry per unit (entries below :data:`MIN_UNIT_COST` count as
    that).
    """

    __slots__ = ("_prefix", "total_units")

    def __init__(self, total_units: int, costs: Sequence[float] | npt.NDArray[np.float64] | None):
        self.total_units = total_units
        self._prefix: npt.NDArray[np.float64] | None = None
        if costs is not None:
            values = np.asarray(costs, dtype=np.float64)
            if values.shape != (total_units,) or not np.all(np.isfinite(values)):
                raise ValueError(f"unit costs must be {total_units} finite numbers")
            self._prefix = np.concatenate(([0.0], np.cumsum(np.maximum(values, MIN_UNIT_COST))))

    @property
    def uniform(self) -> bool:
        """Whether every unit costs 1.0."""
        return self._prefix is None

    def cost(self, start: int, stop: int) -> float:
        """Estimated cost of units ``[start, stop)``."""
        if self._prefix is None:
            return float(stop - start)
        return float(self._prefix[stop] - self._prefix[start])

    def total(self) -> float:
        return self.cost(0, self.total_units)

    def dearest(self) -> float:
        """The estimated cost of the dearest unit."""
        if self._prefix is None:
            return 1.0
        return float(np.diff(self._prefix).max())

    def units_within(self, start: int, budget: float) -> int:
        """How many units from ``start`` on fit in ``budget`` of cost: at least 1 (a unit
        dearer than the budget is a chunk of its own), at most what is left."""
        left = self.total_units - start
        if self._prefix is None:
            fit = int(budget)
        else:
            # The last prefix sum not above prefix[start] + budget ends the chunk.
            end = int(np.searchsorted(self._prefix, self._prefix[start] + budget, side="right"))
            fit = end - 1 - start
        return max(1, min(fit, left))


def uniform_costs(total_units: int) -> UnitCosts:
    """Costs of a job whose units all cost 1.0."""
    return UnitCosts(total_units, None)

"""Grid carbon intensity sources: I/O at the edge, behind one small interface.

::

    IntensitySource            what a source answers: latest value, upcoming (async)
    ├── AnnualSource           the annual averages shipped with the package (annual.py)
    ├── TraceSource            recorded time series replayed (traces.py)
    ├── ElectricityMaps        the Electricity Maps API (electricitymaps.py)
    └── CarbonAwareSDK         the Green Software Foundation's Carbon Aware WebAPI

:class:`~hydracompute.carbon.cache.IntensityCache` keeps what a source last said, refreshed
off the request path, and answers the scheduler from memory (it is the
:class:`~hydracompute.core.carbon.IntensityView` the store consults); when a source is
unreachable it keeps the last known value, or a zone's annual average.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from hydracompute.core.carbon import Point
from hydracompute.errors import HydraError


class CarbonSourceError(HydraError):
    """A source could not answer (unreachable, refused, or answered nonsense)."""

    status = 502
    title = "Carbon intensity source unavailable"


class IntensitySource(abc.ABC):
    """Where grid intensities come from. Times are seconds since the epoch (UTC)."""

    #: How the source is named in ``--carbon-source`` and on the dashboard.
    name: str = ""

    @abc.abstractmethod
    async def latest(self, zone: str, now: float) -> Point | None:
        """The zone's latest intensity, or ``None`` if the source knows nothing of it.

        Raises:
            CarbonSourceError: the source could not be asked.
        """

    async def upcoming(self, zone: str, now: float) -> Sequence[Point]:
        """The zone's expected intensity from ``now`` on, in time order (empty: none).

        Raises:
            CarbonSourceError: the source could not be asked.
        """
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

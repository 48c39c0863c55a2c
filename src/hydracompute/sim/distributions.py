"""Random durations and factors a scenario describes, drawn from a seeded generator.

A distribution is a TOML table naming its family and parameters, e.g.
``{ dist = "weibull", shape = 0.6, scale = 7200 }``. Families: ``fixed`` (``value``),
``uniform`` (``low``, ``high``), ``exponential`` (``mean``), ``weibull`` (``shape``,
``scale``), ``lognormal`` (``median``, ``sigma``: the logarithm's standard deviation),
``gamma`` (``shape``, ``scale``). Durations are in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hydracompute.errors import InvalidParams

#: Parameters of each family, each with its lower bound (exclusive unless 0).
FAMILIES: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "exponential": ("mean",),
    "weibull": ("shape", "scale"),
    "lognormal": ("median", "sigma"),
    "gamma": ("shape", "scale"),
}
#: Parameters that may be zero (the rest must be positive).
MAY_BE_ZERO = frozenset({"value", "low", "sigma"})
#: No parameter may exceed this (a year, in seconds; far beyond any factor).
MAX_PARAMETER = 366 * 86400.0


@dataclass(frozen=True)
class Distribution:
    """A family and its parameters; :meth:`draw` samples it."""

    family: str
    params: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, spec: Any, where: str) -> Distribution:
        """Read a distribution table (a bare number means ``fixed``).

        Raises:
            InvalidParams: an unknown family, a missing, unknown or out-of-range
                parameter; ``errors`` names the field as ``where``.
        """
        if isinstance(spec, int | float) and not isinstance(spec, bool):
            spec = {"dist": "fixed", "value": spec}
        if not isinstance(spec, Mapping):
            raise InvalidParams({where: "must be a number or a table with dist = ..."})
        family = spec.get("dist")
        if family not in FAMILIES:
            raise InvalidParams({where: f"dist must be one of {', '.join(FAMILIES)}"})
        names = FAMILIES[family]
        extra = sorted(set(spec) - {"dist", *names})
        if extra:
            raise InvalidParams({where: f"unknown parameter(s) for {family}: {', '.join(extra)}"})
        values = []
        for name in names:
            value = spec.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidParams({where: f"{family} needs a number {name}"})
            low_ok = value >= 0 if name in MAY_BE_ZERO else value > 0
            if not (low_ok and math.isfinite(value) and value <= MAX_PARAMETER):
                raise InvalidParams({where: f"{name} must be in (0, {MAX_PARAMETER:g}]"})
            values.append((name, float(value)))
        if family == "uniform" and values[0][1] > values[1][1]:
            raise InvalidParams({where: "uniform needs low <= high"})
        return cls(family, tuple(values))

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        """A function drawing from this distribution with ``rng``."""
        p = dict(self.params)
        match self.family:
            case "fixed":
                value = p["value"]
                return lambda: value
            case "uniform":
                low, high = p["low"], p["high"]
                return lambda: rng.uniform(low, high)
            case "exponential":
                rate = 1.0 / p["mean"]
                return lambda: rng.expovariate(rate)
            case "weibull":
                scale, shape = p["scale"], p["shape"]
                return lambda: rng.weibullvariate(scale, shape)
            case "lognormal":
                mu, sigma = math.log(p["median"]), p["sigma"]
                return lambda: rng.lognormvariate(mu, sigma)
            case _:  # gamma
                shape, scale = p["shape"], p["scale"]
                return lambda: rng.gammavariate(shape, scale)

    def mean(self) -> float:
        """The distribution's mean (for the report and the ideal makespan)."""
        p = dict(self.params)
        match self.family:
            case "fixed":
                return p["value"]
            case "uniform":
                return (p["low"] + p["high"]) / 2
            case "exponential":
                return p["mean"]
            case "weibull":
                return p["scale"] * math.gamma(1 + 1 / p["shape"])
            case "lognormal":
                return p["median"] * math.exp(p["sigma"] ** 2 / 2)
            case _:
                return p["shape"] * p["scale"]

    def describe(self) -> dict[str, Any]:
        return {"dist": self.family, **dict(self.params)}

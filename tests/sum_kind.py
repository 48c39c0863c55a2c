"""A tiny job kind for store and scheduler tests: the sum of the integers of a range."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydracompute.errors import InvalidResult
from hydracompute.kinds import Answer, ChunkOutput, JobKind, KindRegistry
from hydracompute.kinds.params import ParamReader


class SumKind(JobKind):
    name = "sum"
    probe_units = 2
    max_chunk_units = 1000

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        reader = ParamReader(params)
        n = reader.int("n", 1, 10**9)
        reader.finish()
        return {"n": n}

    def total_units(self, params: dict[str, Any]) -> int:
        return int(params["n"])

    def compute(self, params: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
        return {"total": sum(range(start, stop))}

    def check(self, params: dict[str, Any], start: int, stop: int, output: dict[str, Any]) -> None:
        if output.get("total") != sum(range(start, stop)):
            raise InvalidResult("wrong total")

    def fold_live(self, params: dict[str, Any], live: Any, output: Any) -> Any:
        return {"total": int(live.get("total", 0)) + int(output["total"])}

    def merge(self, params: dict[str, Any], outputs: Iterable[ChunkOutput]) -> Answer:
        return Answer(summary={"total": sum(o.output["total"] for o in outputs)})


def sum_registry() -> KindRegistry:
    registry = KindRegistry()
    registry.register(SumKind())
    return registry


class PlausibleSumKind(SumKind):
    """A sum whose check cannot tell a plausible lie (an output off by a little) from the
    truth, as for real kinds: only replication can."""

    name = "psum"

    def check(self, params: dict[str, Any], start: int, stop: int, output: dict[str, Any]) -> None:
        if set(output) != {"total"} or type(output["total"]) is not int:
            raise InvalidResult("a psum output has exactly one integer field, total")


def verification_registry() -> KindRegistry:
    registry = KindRegistry()
    registry.register(PlausibleSumKind())
    return registry

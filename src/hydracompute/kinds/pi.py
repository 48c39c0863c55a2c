"""Monte-Carlo π: the fraction of random points of the unit square inside the quarter disc.

Work units are *blocks* of :data:`BLOCK_SAMPLES` samples;
the last block of a job may be partial. Sample ``i`` is drawn from a counter-based
generator keyed by ``(seed, i)``, so a job's hit count is the same whatever its chunking.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from hydracompute.errors import InvalidResult
from hydracompute.kinds.base import JSON, Answer, ChunkOutput, JobKind, ParamField
from hydracompute.kinds.params import ParamReader

#: Samples per block: the unit jobs are cut into. The generator is defined per sample index,
#: so counts do not depend on it, but chunk numbering does — it never changes.
BLOCK_SAMPLES: int = 1 << 20

MAX_SAMPLES = 10**15
MAX_SEED = 2**63 - 1
#: Outputs further than this many standard deviations from the expected count are refused.
#: An honest chunk lands outside with probability below 1e-15.
PLAUSIBLE_SIGMAS = 8.0


class PiKind(JobKind):
    """Estimate π from ``samples`` points drawn with ``seed``."""

    name = "pi"
    unit_name = "block"
    probe_units = 1
    max_chunk_units = 1 << 16
    work_per_unit = float(BLOCK_SAMPLES)

    def validate(self, params: Mapping[str, Any]) -> JSON:
        reader = ParamReader(params)
        samples = reader.int("samples", 1, MAX_SAMPLES)
        seed = reader.int("seed", 0, MAX_SEED, default=None) if reader.present("seed") else None
        reader.finish()
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        return {"samples": samples, "seed": seed}

    def total_units(self, params: JSON) -> int:
        return -(-int(params["samples"]) // BLOCK_SAMPLES)

    def _sample_range(self, params: JSON, start: int, stop: int) -> tuple[int, int]:
        samples = int(params["samples"])
        return min(start * BLOCK_SAMPLES, samples), min(stop * BLOCK_SAMPLES, samples)

    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        # Imported here: only compute processes need numba (a coordinator that merely
        # checks results would carry 130 MB of it).
        from hydracompute.kinds.pi_kernel import count_hits

        first, last = self._sample_range(params, start, stop)
        return {"hits": count_hits(int(params["seed"]), first, last), "samples": last - first}

    def check(self, params: JSON, start: int, stop: int, output: JSON) -> None:
        first, last = self._sample_range(params, start, stop)
        n = last - first
        if set(output) != {"hits", "samples"}:
            raise InvalidResult("a pi output has exactly the fields hits and samples")
        hits, samples = output["hits"], output["samples"]
        if type(hits) is not int or type(samples) is not int:
            raise InvalidResult("hits and samples must be integers")
        if samples != n:
            raise InvalidResult(f"chunk has {n} samples, output says {samples}")
        if not 0 <= hits <= n:
            raise InvalidResult(f"hits must be between 0 and {n}")
        p = math.pi / 4
        if abs(hits - n * p) > PLAUSIBLE_SIGMAS * math.sqrt(n * p * (1 - p)) + PLAUSIBLE_SIGMAS:
            raise InvalidResult(f"{hits} hits in {n} samples is statistically implausible")

    def merge(self, params: JSON, outputs: Iterable[ChunkOutput]) -> Answer:
        hits = samples = 0
        for chunk in outputs:
            hits += int(chunk.output["hits"])
            samples += int(chunk.output["samples"])
        return Answer(summary=estimate(hits, samples))

    def answer_from_live(self, params: JSON, live: JSON) -> Answer | None:
        return Answer(summary=estimate(int(live["hits"]), int(live["samples"])))

    def fold_live(self, params: JSON, live: JSON, output: JSON) -> JSON:
        hits = int(live.get("hits", 0)) + int(output["hits"])
        return estimate(hits, int(live.get("samples", 0)) + int(output["samples"]))

    def param_fields(self) -> list[ParamField]:
        return [
            ParamField(
                "samples",
                "integer",
                "Samples",
                required=True,
                default=10**9,
                minimum=1,
                maximum=MAX_SAMPLES,
                help="Random points to draw.",
            ),
            ParamField(
                "seed",
                "integer",
                "Seed",
                minimum=0,
                maximum=MAX_SEED,
                help="Same seed, same answer; chosen at random when empty.",
            ),
        ]

    def warm_up(self) -> None:
        from hydracompute.kinds.pi_kernel import count_hits

        count_hits(0, 0, 64)

    def units_of_work(self, params: JSON, start: int, stop: int) -> float:
        first, last = self._sample_range(params, start, stop)
        return float(last - first)

    def total_work(self, params: JSON) -> float:
        return float(params["samples"])

    def work_name(self) -> str:
        return "samples"


def estimate(hits: int, samples: int) -> JSON:
    """π ≈ 4·hits/samples with its standard error (binomial, from the observed fraction)."""
    if samples == 0:
        return {"hits": 0, "samples": 0, "estimate": None, "stderr": None}
    fraction = hits / samples
    return {
        "hits": hits,
        "samples": samples,
        "estimate": 4.0 * fraction,
        "stderr": 4.0 * math.sqrt(fraction * (1.0 - fraction) / samples),
    }

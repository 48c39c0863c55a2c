"""The worker's last line of defence: it re-checks every lease before computing it."""

from __future__ import annotations

from typing import Any

import pytest

from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.worker import executor
from hydracompute.worker.executor import run_chunk
from tests.sum_kind import SumKind, sum_registry

PI = {"samples": 10 * BLOCK_SAMPLES, "seed": 7}


def test_a_valid_lease_is_computed_and_timed() -> None:
    run = run_chunk("pi", PI, 2, 5)
    assert run.error is None and run.output is not None
    assert run.output["hits"] == count_hits(7, 2 * BLOCK_SAMPLES, 5 * BLOCK_SAMPLES)
    assert run.compute_s > 0


#: A picture too large for one chunk of the kind's most tiles to be held in memory.
WIDE = {
    "width": 32768,
    "height": 8192,
    "x_min": -2.0,
    "x_max": 0.5,
    "y_min": -1.25,
    "y_max": 1.25,
    "max_iter": 10,
    "colour_map": "grey",
}


@pytest.mark.parametrize(
    ("kind", "params", "start", "stop", "message"),
    [
        ("nope", PI, 0, 1, "no job kind"),
        ("pi", {"samples": 10**16, "seed": 1}, 0, 1, "samples"),  # over the kind's limit
        ("pi", {"samples": 100}, 0, 1, "canonical"),  # no seed: not what a coordinator sends
        ("pi", {**PI, "extra": 1}, 0, 1, "extra"),
        ("pi", PI, 5, 11, "outside the job"),
        ("pi", PI, 3, 3, "outside the job"),
        (
            "mandelbrot",
            WIDE,
            0,
            2048,
            "exceeds",
        ),  # a chunk too large to hold in memory is never started
        (
            "mandelbrot",
            {**WIDE, "tile": 16},
            0,
            16385,
            "exceeds",
        ),  # the bound is in pixels: 16,384 tiles of 16² (4 Mpixel)
    ],
)
def test_a_hostile_or_broken_lease_is_refused_not_computed(
    kind: str, params: dict[str, object], start: int, stop: int, message: str
) -> None:
    run = run_chunk(kind, params, start, stop)
    assert run.output is None
    assert run.error is not None and message in run.error


class NotANumberKind(SumKind):
    """A third-party kind with a bug: its output holds a NaN."""

    name = "nan"

    def compute(self, params: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
        return {"total": sum(range(start, stop)), "mean": {"values": [1.0, float("nan")]}}


def test_an_output_json_cannot_carry_is_this_chunks_failure_not_a_stuck_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = sum_registry()
    registry.register(NotANumberKind())
    monkeypatch.setattr(executor, "default_registry", lambda: registry)
    run = run_chunk("nan", {"n": 10}, 0, 5)
    assert run.output is None
    assert (
        run.error == "ValueError: output.mean.values[1] is NaN or infinite, which JSON cannot carry"
    )
    assert run_chunk("sum", {"n": 10}, 0, 5).output == {"total": 10}

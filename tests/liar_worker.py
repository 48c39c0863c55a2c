"""A worker that lies: ``python tests/liar_worker.py worker URL …`` runs the real worker
agent with π, Mandelbrot and wasm kinds that return plausible wrong outputs — outputs that pass
every check a kind can make alone, so only verification by replication can catch them.

The lying registry is installed at import, so the worker's compute processes (started
with ``spawn``, which imports this module again) lie too.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import hydracompute.kinds as kinds
from hydracompute.kinds import KindRegistry
from hydracompute.kinds.base import JSON
from hydracompute.kinds.mandelbrot import MandelbrotKind, count_dtype, decode_counts
from hydracompute.kinds.pi import PiKind
from hydracompute.kinds.wasm import WasmKind

#: Extra hits in a lying π output: within the kind's plausibility check for any chunk.
EXTRA_HITS = 1000


class LyingPi(PiKind):
    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        honest = super().compute(params, start, stop)
        return {**honest, "hits": min(honest["hits"] + EXTRA_HITS, honest["samples"])}


class LyingMandelbrot(MandelbrotKind):
    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        honest = super().compute(params, start, stop)
        counts = decode_counts(params, start, stop, honest).copy()
        # A few counts off by one, every figure kept consistent with them.
        for i in range(0, counts.size, max(1, counts.size // 5)):
            counts[i] = counts[i] - 1 if counts[i] > 1 else counts[i] + 1
        wire = np.ascontiguousarray(counts, dtype=count_dtype(params))
        import zstandard

        packed = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(wire.data)
        return {
            "counts": base64.b64encode(packed).decode("ascii"),
            "iterations": int(counts.sum(dtype=np.uint64)),
            "inside": int(np.count_nonzero(counts == params["max_iter"])),
        }


class LyingWasm(WasmKind):
    """Runs the module, then adds ``EXTRA_HITS`` to the first summed value (a π module's
    hits): well-formed bytes no check of the kind can tell from honest ones."""

    def compute_files(
        self, params: JSON, start: int, stop: int, files: Mapping[str, Path], cache: Path | None
    ) -> JSON:
        honest = base64.b64decode(super().compute_files(params, start, stop, files, cache)["data"])
        (first,) = struct.unpack_from("<q", honest)
        lie = struct.pack("<q", first + EXTRA_HITS) + honest[8:]
        return {"data": base64.b64encode(lie).decode("ascii")}


def lying_registry() -> KindRegistry:
    registry = KindRegistry()
    registry.register(LyingPi())
    registry.register(LyingMandelbrot())
    registry.register(LyingWasm())
    return registry


kinds._default = lying_registry()

if __name__ == "__main__":
    from hydracompute.cli import main

    main()

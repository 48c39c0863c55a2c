"""The C examples of wasm jobs, built from source with clang and wasi-libc as the tests run
and run by the sandbox as a worker runs a chunk: the π estimator answers exactly what the
built-in π kind answers, the word count what Python counts."""

from __future__ import annotations

import base64
import itertools
import struct
from pathlib import Path

from hydracompute.kinds import ChunkOutput
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.kinds.wasm import WasmKind
from tests.test_wasm_sandbox import job
from tests.wasm_support import example_c

KIND = WasmKind()


def test_the_c_pi_example_is_bit_identical_to_the_built_in_pi_kind(tmp_path: Path) -> None:
    module = example_c("pi", tmp_path)
    samples, seed = 7 * BLOCK_SAMPLES + 4321, 2**63 - 12345  # a seed with its top bit near
    canonical, files = job(tmp_path, module, units=9, args={"seed": seed, "samples": samples})
    chunks = [(0, 1), (1, 5), (5, 8), (8, 9)]  # the last unit lies past the samples
    outputs = [
        ChunkOutput(a, b, KIND.compute_files(canonical, a, b, files, tmp_path / "compiled"))
        for a, b in chunks
    ]
    for output in outputs:
        KIND.check(canonical, output.start, output.stop, output.output)
    assert KIND.merge(canonical, outputs).summary["values"] == [
        count_hits(seed, 0, samples),
        samples,
    ]
    middle = struct.unpack("<qq", base64.b64decode(outputs[1].output["data"]))
    assert middle == (count_hits(seed, BLOCK_SAMPLES, 5 * BLOCK_SAMPLES), 4 * BLOCK_SAMPLES)
    past = struct.unpack("<qq", base64.b64decode(outputs[3].output["data"]))
    assert past == (0, 0)


def test_the_c_word_count_example_counts_like_python(tmp_path: Path) -> None:
    module = example_c("wordcount", tmp_path)
    # Words of every length, runs of every ASCII whitespace, and words straddling the
    # 64 KiB blocks and the chunks' edges (lines of 37 to 97 bytes do not align with them).
    lines = [
        b"word%d \t%s\x0bx\x0cy\r" % (i, b"z" * (i % 61)) + b" " * (i % 3) for i in range(9000)
    ]
    text = b"\n".join(lines) + b"tail"
    units = -(-len(text) // 65536) + 1
    canonical, files = job(tmp_path, module, units=units, inputs=text)
    edges = [0, 1, 2, 5, units]
    outputs = [
        ChunkOutput(a, b, KIND.compute_files(canonical, a, b, files, None))
        for a, b in itertools.pairwise(edges)
    ]
    answer = KIND.merge(canonical, outputs).summary["values"]
    assert answer == [len(text), text.count(b"\n"), len(text.split())]
    # One chunk over everything agrees with the split ones.
    whole = base64.b64decode(KIND.compute_files(canonical, 0, units, files, None)["data"])
    assert list(struct.unpack("<qqq", whole)) == answer

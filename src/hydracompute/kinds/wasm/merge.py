"""The built-in ways a WebAssembly job's chunk outputs become its answer.

The coordinator merges; it never runs submitted code, so merging is one of these fixed,
documented strategies (docs/wasm.md says why):

- ``sum``: each output is a vector of little-endian signed 64-bit integers; the answer is
  their element-wise sum (exact: Python integers), a shorter vector counting as zeros;
- ``sum-f64``: the same with 64-bit floats, each element summed exactly rounded
  (:func:`math.fsum`), so the answer does not depend on the order chunks arrived in;
- ``concat``: the outputs' bytes in unit order, as the artefact ``output.bin``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from collections.abc import Iterable, Iterator

from hydracompute.errors import InvalidResult

STRATEGIES = ("sum", "sum-f64", "concat")
#: Bytes of one element of a summed vector.
ELEMENT_BYTES = 8
#: The most bytes a chunk output may have when it is summed (the answer is that long).
MAX_SUMMED_BYTES = 4096
ARTEFACT = "output.bin"


def encode(data: bytes) -> dict[str, str]:
    """A chunk's output as it travels: its bytes in base64."""
    return {"data": base64.b64encode(data).decode("ascii")}


def decode(output: dict[str, object], limit: int) -> bytes:
    """The bytes of a chunk output.

    Raises:
        InvalidResult: not exactly ``{"data": <base64>}``, or more than ``limit`` bytes.
    """
    if set(output) != {"data"} or not isinstance(output["data"], str):
        raise InvalidResult("a wasm output is exactly {'data': <base64 string>}")
    text = output["data"]
    if len(text) > 4 * (-(-limit // 3)):
        raise InvalidResult(f"the output is over its limit of {limit} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidResult(f"the output is not valid base64: {exc}") from None
    if len(data) > limit:
        raise InvalidResult(f"the output is over its limit of {limit} bytes")
    return data


def check(strategy: str, data: bytes) -> None:
    """Raise :class:`InvalidResult` if ``data`` cannot be merged by ``strategy``."""
    if strategy == "concat":
        return
    if len(data) % ELEMENT_BYTES:
        raise InvalidResult(
            f"a '{strategy}' output is a whole number of 8-byte values, not {len(data)} bytes"
        )
    if strategy == "sum-f64" and not all(math.isfinite(v) for v in _floats(data)):
        raise InvalidResult("a 'sum-f64' output holds NaN or an infinity")


def _ints(data: bytes) -> list[int]:
    return [v for (v,) in struct.iter_unpack("<q", data)]


def _floats(data: bytes) -> list[float]:
    return [v for (v,) in struct.iter_unpack("<d", data)]


def add_ints(total: list[int], data: bytes) -> list[int]:
    """``total`` plus the vector in ``data``, element-wise (a new list)."""
    values = _ints(data)
    longer, shorter = (total, values) if len(total) >= len(values) else (values, total)
    return [a + (shorter[i] if i < len(shorter) else 0) for i, a in enumerate(longer)]


def merge_sum(strategy: str, pieces: Iterable[bytes]) -> list[int] | list[float]:
    """The element-wise sum of the vectors in ``pieces`` (see the module docstring)."""
    if strategy == "sum":
        total: list[int] = []
        for data in pieces:
            total = add_ints(total, data)
        return total
    columns: list[list[float]] = []
    for data in pieces:
        values = _floats(data)
        columns.extend([] for _ in range(len(values) - len(columns)))
        for column, value in zip(columns, values, strict=False):
            column.append(value)
    return [math.fsum(column) for column in columns]


def concat_summary(pieces: Iterable[bytes]) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    for data in pieces:
        digest.update(data)
        size += len(data)
    return {"bytes": size, "sha256": digest.hexdigest()}


def concat_pieces(pieces: Iterable[bytes]) -> Iterator[bytes]:
    return (data for data in pieces if data)

"""A streaming PNG encoder: an RGB image written band by band, in constant memory.

Pillow builds the whole image in memory before encoding it; a 2^28-pixel picture would
take 768 MB of RGB alone. This writer takes horizontal bands of rows in order and returns
the bytes of the file as they are ready: the signature and ``IHDR`` first, then ``IDAT``
chunks of filtered, deflated rows, then ``IEND`` (PNG specification, ISO/IEC 15948).

Every row uses filter type 2 ("Up": each byte minus the byte above it): whole bands are
filtered with one NumPy subtraction, and escape-time pictures, smooth from row to row,
deflate about as well as with Pillow's per-row choice (docs/benchmarks.md).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The filter type byte that starts every row (2: Up).
FILTER_UP = 2
#: Deflated bytes gathered before an ``IDAT`` chunk is emitted (fewer, larger chunks).
IDAT_BYTES = 1 << 20


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type and data."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


class PngStreamWriter:
    """Encodes a ``width``×``height`` 8-bit RGB image given as bands of rows, top first.

    Call :meth:`start` once, :meth:`write_rows` for each band, then :meth:`finish`; each
    returns the file's next bytes (possibly empty). The rows given must add up to
    ``height`` exactly.
    """

    def __init__(self, width: int, height: int, level: int = 1) -> None:
        if not (1 <= width < 1 << 31 and 1 <= height < 1 << 31):
            raise ValueError(f"a PNG image cannot be {width}×{height}")
        self.width, self.height = width, height
        self._deflate = zlib.compressobj(level)
        self._previous = np.zeros((1, width * 3), dtype=np.uint8)  # "above" the first row
        self._rows_written = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def start(self) -> bytes:
        """The signature and the header chunk."""
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return PNG_SIGNATURE + png_chunk(b"IHDR", header)

    def write_rows(self, rgb: npt.NDArray[np.uint8]) -> bytes:
        """Add the next rows (shape (rows, width, 3)); returns any ``IDAT`` chunks ready.

        Raises:
            ValueError: the band has the wrong shape or goes past the last row.
        """
        rows = rgb.shape[0]
        if rgb.shape[1:] != (self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rows must be uint8 of shape (n, {self.width}, 3)")
        if self._rows_written + rows > self.height:
            raise ValueError(f"more than {self.height} rows")
        if rows == 0:
            return b""
        flat = rgb.reshape(rows, self.width * 3)
        filtered = np.empty((rows, self.width * 3 + 1), dtype=np.uint8)
        filtered[:, 0] = FILTER_UP
        # uint8 arithmetic wraps modulo 256, as the filter is defined.
        np.subtract(flat[:1], self._previous, out=filtered[:1, 1:])
        np.subtract(flat[1:], flat[:-1], out=filtered[1:, 1:])
        self._previous = flat[-1:].copy()
        self._rows_written += rows
        return self._gather(self._deflate.compress(filtered.data))

    def finish(self) -> bytes:
        """The last ``IDAT`` chunk(s) and ``IEND``.

        Raises:
            ValueError: fewer rows were written than the image has.
        """
        if self._rows_written != self.height:
            raise ValueError(f"{self._rows_written} rows written of {self.height}")
        tail = self._gather(self._deflate.flush(), final=True)
        return tail + png_chunk(b"IEND", b"")

    def _gather(self, deflated: bytes, final: bool = False) -> bytes:
        if deflated:
            self._pending.append(deflated)
            self._pending_bytes += len(deflated)
        if not self._pending or (self._pending_bytes < IDAT_BYTES and not final):
            return b""
        chunk = png_chunk(b"IDAT", b"".join(self._pending))
        self._pending, self._pending_bytes = [], 0
        return chunk

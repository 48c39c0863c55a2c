"""The streaming PNG writer: files Pillow (and zlib) read back to exactly the rows given."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from hydracompute.kinds.png_stream import IDAT_BYTES, PNG_SIGNATURE, PngStreamWriter


def encode(rgb: np.ndarray, bands: list[int]) -> bytes:
    writer = PngStreamWriter(rgb.shape[1], rgb.shape[0])
    out = [writer.start()]
    row = 0
    for rows in bands:
        out.append(writer.write_rows(rgb[row : row + rows]))
        row += rows
    out.append(writer.finish())
    return b"".join(out)


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking each CRC."""
    assert png.startswith(PNG_SIGNATURE)
    found, at = [], len(PNG_SIGNATURE)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data)
        found.append((kind, data))
        at += 12 + length
    return found


@pytest.mark.parametrize(
    ("width", "height", "bands"),
    [(1, 1, [1]), (7, 5, [5]), (7, 5, [1, 0, 2, 2]), (130, 67, [64, 3]), (300, 200, [1] * 200)],
)
def test_pillow_reads_back_exactly_the_rows_written(
    width: int, height: int, bands: list[int]
) -> None:
    rgb = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
    png = encode(rgb, bands)
    image = Image.open(io.BytesIO(png))
    assert (image.mode, image.size) == ("RGB", (width, height))
    np.testing.assert_array_equal(np.asarray(image), rgb)
    kinds = [kind for kind, _ in chunks(png)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}


def test_a_large_image_is_split_into_idat_chunks_of_bounded_size() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (1024, 1000, 3), np.uint8)  # ~3 MB
    png = encode(rgb, [64] * 16)
    idats = [data for kind, data in chunks(png) if kind == b"IDAT"]
    assert len(idats) >= 3
    assert max(map(len, idats)) < IDAT_BYTES + 64 * 3001 * 2  # one band past the threshold
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)


def test_wrong_bands_are_refused() -> None:
    writer = PngStreamWriter(4, 2)
    writer.start()
    with pytest.raises(ValueError, match="shape"):
        writer.write_rows(np.zeros((1, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        writer.write_rows(np.zeros((1, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="more than 2 rows"):
        writer.write_rows(np.zeros((3, 4, 3), np.uint8))
    writer.write_rows(np.zeros((1, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="1 rows written of 2"):
        writer.finish()
    with pytest.raises(ValueError, match="cannot be"):
        PngStreamWriter(0, 1)

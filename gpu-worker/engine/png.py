"""Lossless PNG written fast: the Up filter, ISA-L deflate, horizontal strips in parallel.

A PNG's pixels are one zlib stream of filtered rows. With the Up filter a row's bytes depend only
on that row and the one above it in the *source*, so strips of rows are filtered and deflated
independently, in threads (numpy and ISA-L release the GIL). Every strip but the last ends on a
sync flush (byte-aligned, not final), so the raw deflate pieces concatenate into one valid
stream, as pigz does; the zlib header and the Adler-32 of all filtered bytes wrap it.

On a 12 MP photo: the Up filter at ISA-L level 1 is the size of libpng's adaptive filters at
zlib level 1 with the RLE strategy, and several times faster before any threading
(bench/results/encode_*.md).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from isal import isal_zlib

from engine.threads import cpu_pool

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no preset dictionary
UP_FILTER = 2
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA
STRIP_BYTES = 1 << 21  # below this a strip is not worth a thread


def chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join(chunk_parts(kind, [data]))


def chunk_parts(kind: bytes, pieces: list[bytes]) -> list[bytes]:
    """A chunk whose data is ``pieces`` joined, as parts to join once with the rest of the file
    (the 10 MB IDAT of a 12 MP photo is not copied into a chunk first)."""
    crc = isal_zlib.crc32(kind)
    for piece in pieces:
        crc = isal_zlib.crc32(piece, crc)
    return [struct.pack(">I", sum(len(p) for p in pieces)), kind, *pieces, struct.pack(">I", crc)]


def blank_png(size: tuple[int, int], text: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The PNG ``write_png`` makes of an all-zero W x H grey image (an empty mask), made once per
    size and text: at 12 MP it is 12 MB of zeros to filter and deflate for a few kB that never
    change."""
    return _blank_png(size, text)


@lru_cache(maxsize=8)
def _blank_png(size: tuple[int, int], text: tuple[tuple[str, str], ...]) -> bytes:
    width, height = size
    return write_png(np.zeros((height, width), np.uint8), text=text)


def write_png(pixels: np.ndarray, *, icc_profile: bytes | None = None, level: int = 1,
              threads: int | None = None, text: Iterable[tuple[str, str]] = ()) -> bytes:
    """uint8 H x W (grey) or H x W x C (C = 1-4: grey, grey+alpha, RGB, RGBA) -> PNG bytes.

    ``level`` is ISA-L's, 0-3. ``threads``: strips deflated at once (default: one per core,
    each at least ``STRIP_BYTES`` of rows). ``text``: (keyword, value) pairs written as tEXt
    chunks (Latin-1; keywords of 1 to 79 characters)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"write_png takes uint8 H x W [x C] pixels, not {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels not in COLOUR_TYPES or height < 1 or width < 1:
        raise ValueError(f"write_png cannot write an image of shape {pixels.shape}")
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), np.uint8)

    wanted = threads or min(os.cpu_count() or 2, filtered.nbytes // STRIP_BYTES)
    count = max(1, min(wanted, height))
    bounds = np.linspace(0, height, count + 1).astype(int)

    def strip(i: int) -> bytes:
        top, bottom = bounds[i], bounds[i + 1]
        filtered[top:bottom, 0] = UP_FILTER
        if top == 0:  # the first row's "row above" is zeros
            filtered[0, 1:] = rows[0]
            top += 1
        np.subtract(rows[top:bottom], rows[top - 1:bottom - 1], out=filtered[top:bottom, 1:])
        compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        last = i == count - 1
        return compressor.compress(filtered[bounds[i]:bottom]) + compressor.flush(
            isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH)

    pieces = list(cpu_pool().map(strip, range(count))) if count > 1 else [strip(0)]
    adler = isal_zlib.adler32(filtered)

    header = struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[channels], 0, 0, 0)
    parts = [SIGNATURE, chunk(b"IHDR", header)]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))
    for keyword, value in text:
        if not 1 <= len(keyword) <= 79 or "\x00" in keyword + value:
            raise ValueError(f"not a PNG text keyword and value: {keyword!r}, {value!r}")
        parts.append(chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + value.encode("latin-1")))
    parts += chunk_parts(b"IDAT", [ZLIB_HEADER, *pieces, struct.pack(">I", adler)])
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)

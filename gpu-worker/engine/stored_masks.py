"""Masks as stored between stages: one 0/255 PNG per concept and the instances file.

Instances file (``{idx}_instances.json``)::

    {"width": W, "height": H,
     "concepts": {"Door": [{"id": 0, "score": 0.91, "bbox": [x0, y0, x1, y1], "area": 1234,
                            "rle": [z0, o0, z1, o1, ...]}]}}

``rle`` is the instance mask in the result's pixel space, row-major (C order) over the whole
W x H image, as alternating run lengths that start with a run of zeros (possibly 0).

Stored objects are read back by ``apply`` jobs and are not trusted: anything malformed raises
``MasksNotFound``, never another error. An instances file is bounded before any mask is decoded
(``MAX_INSTANCES_FILE_BYTES``, ``MAX_INSTANCES``, ``MAX_BOX_AREA_IMAGES``): decoding costs
memory and time in proportion to the instances' boxes, not to the file's bytes, so a few kB
claiming a thousand full-frame instances would otherwise cost gigabytes.
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
import zlib
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import MasksNotFound
from engine.png import blank_png, write_png
from engine.segmenter import OUTLINE_TEXT_KEY, Instance, Outline, Segmentation

MAX_INSTANCES_FILE_BYTES = 32 * 1024 * 1024
MAX_INSTANCES = 4096
# The instances' boxes together cover at most this many images' worth of pixels.
MAX_BOX_AREA_IMAGES = 64

# What Pillow, zlib, json and numpy raise on malformed bytes; MemoryError deliberately not.
MALFORMED = (OSError, ValueError, TypeError, SyntaxError, EOFError, IndexError, KeyError, OverflowError,
             RecursionError, struct.error, zlib.error, Image.DecompressionBombError)


def encode_mask(mask: np.ndarray, outline: Outline = Outline.COARSE) -> bytes:
    """A 0/255 grey PNG; an outline that follows the photo says so in a ``Mask-Outline`` text chunk."""
    text = ((OUTLINE_TEXT_KEY, outline.value),) if outline.follows_photo else ()
    if not mask.any():  # a concept found nowhere: the same bytes, made once per size
        return blank_png((mask.shape[1], mask.shape[0]), text)
    return write_png(np.multiply(mask, 255, dtype=np.uint8), text=text)


def decode_mask(data: bytes, size: tuple[int, int], *, key: str = "stored mask") -> tuple[np.ndarray, Outline]:
    """A stored mask as bool H x W and the outline its text chunk names (coarse without one);
    ``MasksNotFound`` when it is not a readable mask of ``size`` (W, H). The size is checked from
    the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                if img.size != size:
                    raise MasksNotFound(f"{key} is {img.size[0]}x{img.size[1]}, not the result's size "
                                        f"{size[0]}x{size[1]}")
                mask = np.asarray(img.convert("L")) > 127
                return mask, Outline.from_text(img.info.get(OUTLINE_TEXT_KEY))
    except MALFORMED as exc:
        raise MasksNotFound(f"{key} is not a readable mask image") from exc


def rle_encode_box(crop: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> list[int]:
    """Run lengths (the instances file's ``rle``) of a ``size`` (W, H) mask that is zero outside
    ``box`` (x0, y0, x1, y1), from the box's part alone: the work follows the box, not the image."""
    (x0, y0, _, _), (width, height) = box, size
    rows, cols = crop.shape
    padded = np.zeros((rows, cols + 2), bool)  # a zero on each side: runs never cross rows
    padded[:, 1:-1] = crop
    flat = padded.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    row, col = np.divmod(changes, cols + 2)
    starts = (y0 + row) * width + x0 + col - 1
    # A run of ones that ends a row and one that opens the next meet at the same index: one run.
    joined = np.flatnonzero(starts[1:] == starts[:-1])
    keep = np.ones(starts.size, bool)
    keep[joined] = keep[joined + 1] = False
    starts = starts[keep & (starts < width * height)]
    return np.diff(np.concatenate(([0], starts, [width * height]))).tolist()


def _run_lengths(runs: Any, pixels: int) -> np.ndarray:
    """``runs`` as int64, each between 0 and ``pixels``, together exactly ``pixels``; ValueError
    otherwise. No run can overflow the sums: each is bounded before they are added."""
    if not isinstance(runs, list):
        raise ValueError("run lengths must be a list")
    lengths = np.asarray(runs) if runs else np.zeros(0, np.int64)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError("run lengths must be whole numbers")
    if lengths.size and (lengths.min() < 0 or lengths.max() > pixels):
        raise ValueError("a run length is negative or longer than the image")
    lengths = lengths.astype(np.int64, copy=False)
    if int(lengths.sum()) != pixels:
        raise ValueError("run lengths do not cover the image")
    return lengths


def rle_decode(runs: list[int], width: int, height: int) -> np.ndarray:
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, _run_lengths(runs, width * height)).reshape(height, width)


def rle_decode_box(runs: list[int], box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The part inside ``box`` (x0, y0, x1, y1) of the ``size`` (W, H) mask ``runs`` encode, built
    from the box's rows only (one byte a pixel of them). ValueError when the runs do not cover
    the image exactly or set a pixel outside the box."""
    (x0, y0, x1, y1), (width, height) = box, size
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} is not inside a {width}x{height} image")
    lengths = _run_lengths(runs, width * height)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ones = np.arange(lengths.size) % 2 == 1
    first, last = y0 * width, y1 * width
    lit = ones & (lengths > 0)
    if (starts[lit] < first).any() or (ends[lit] > last).any():
        raise ValueError(f"the mask has pixels outside its box {box}")
    inside = np.clip(ends, first, last) - np.clip(starts, first, last)  # each run's part in the box's rows
    crop = np.repeat(ones, inside).reshape(y1 - y0, width)[:, x0:x1]
    if int(np.count_nonzero(crop)) != int(lengths[lit].sum()):
        raise ValueError(f"the mask has pixels outside its box {box}")
    return crop


def encode_instances(segmentation: Segmentation, size: tuple[int, int]) -> bytes:
    width, height = size
    concepts = {
        name: [
            {"id": inst.id, "score": round(float(inst.score), 4), "bbox": list(inst.bbox),
             "area": inst.area, "rle": rle_encode_box(inst.crop, inst.bbox, size)}
            for inst in masks.instances
        ]
        for name, masks in segmentation.items()
    }
    return json.dumps({"width": width, "height": height, "concepts": concepts}, separators=(",", ":")).encode()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entries(doc: Any, size: tuple[int, int]) -> list[tuple[str, int, float, tuple[int, int, int, int], Any]]:
    """(concept, id, score, box, runs) of every instance, the file's shape and its bounds checked;
    ValueError naming what is wrong. No mask is decoded here."""
    width, height = size
    if not isinstance(doc, dict):
        raise ValueError("it is not a JSON object")
    if (doc.get("width"), doc.get("height")) != (width, height):
        raise ValueError(f"it is not for a {width}x{height} result")
    concepts = doc.get("concepts")
    if not isinstance(concepts, dict) or not all(isinstance(v, list) for v in concepts.values()):
        raise ValueError("'concepts' must map each concept to a list of instances")
    count = sum(len(v) for v in concepts.values())
    if count > MAX_INSTANCES:
        raise ValueError(f"it holds {count} instances; at most {MAX_INSTANCES} are read")
    entries = []
    area = 0
    for name, found in concepts.items():
        for entry in found:
            if not isinstance(entry, dict):
                raise ValueError(f"an instance of {name} is not an object")
            ident, score, box = entry.get("id"), entry.get("score"), entry.get("bbox")
            if not _is_int(ident) or not (isinstance(score, (int, float)) and not isinstance(score, bool)
                                          and math.isfinite(score)):
                raise ValueError(f"an instance of {name} has no whole-number id or finite score")
            if not (isinstance(box, list) and len(box) == 4 and all(_is_int(v) for v in box)):
                raise ValueError(f"instance {ident} of {name} has no box of four whole numbers")
            x0, y0, x1, y1 = box
            if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
                raise ValueError(f"instance {ident} of {name} has a box outside the image")
            area += (x1 - x0) * (y1 - y0)
            entries.append((name, ident, float(score), (x0, y0, x1, y1), entry.get("rle")))
    if area > MAX_BOX_AREA_IMAGES * width * height:
        raise ValueError(f"its boxes cover {area / (width * height):.0f} images' worth of pixels; "
                         f"at most {MAX_BOX_AREA_IMAGES} are read")
    return entries


def decode_instances(data: bytes, size: tuple[int, int], *,
                     key: str = "stored instances file") -> dict[str, list[Instance]]:
    """Each concept's instances from an instances file for a ``size`` (W, H) result;
    ``MasksNotFound`` when the file is malformed, for another size or over the bounds."""
    if len(data) > MAX_INSTANCES_FILE_BYTES:
        raise MasksNotFound(f"{key} is {len(data)} bytes; at most {MAX_INSTANCES_FILE_BYTES} are read")
    width, height = size
    try:
        doc = json.loads(data)
    except RecursionError as exc:
        raise MasksNotFound(f"{key} is unreadable: it is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise MasksNotFound(f"{key} is unreadable: it is not valid JSON") from exc
    try:
        instances: dict[str, list[Instance]] = {}
        for name, ident, score, box, runs in _entries(doc, size):
            crop = rle_decode_box(runs, box, size)
            instances.setdefault(name, []).append(Instance.from_crop(ident, score, box, crop, (height, width)))
    except ValueError as exc:  # the checks above and below name what is wrong
        raise MasksNotFound(f"{key} is unreadable: {exc}") from exc
    except MALFORMED as exc:
        raise MasksNotFound(f"{key} is unreadable") from exc
    return instances

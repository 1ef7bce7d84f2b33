"""Text-prompted segmentation behind one small interface.

``Segmenter.segment`` takes a batch of photos (RGB uint8, already at the result's size) and the
concepts to find, and returns one ``Segmentation`` per photo: for each concept its instances and
their union, all as boolean masks at the photo's size. ``segment_each`` does the same but hands
each photo's masks over as soon as they are ready (the batcher lets that photo move on while the
rest of its batch finishes); ``SegmenterBase`` gives every segmenter a ``segment_each`` that
yields ``segment``'s results. Both are synchronous and blocking (GPU work); the pipeline calls
them from a worker thread.

Implementations: ``Sam3Segmenter`` (engine/sam3.py) and ``FileMaskSegmenter`` here, a test double
that serves masks stored as PNG files.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image

from engine.errors import SegmentationUnavailable
from presets import Concept


OUTLINE_TEXT_KEY = "Mask-Outline"  # the PNG text chunk a stored mask says its Outline in


class Outline(str, Enum):
    """How a mask's outline stands to the photo's edges; a stored mask says it in its PNG's
    ``Mask-Outline`` text chunk (docs/CONTRACT.md, section 3.2).

    Only a coarse mask is fitted (engine/plan_masks.py). A fitted one fitted again would move
    again (thin parts, weak borders), so ``apply`` on masks a ``segment`` run stored would edit
    other pixels than ``full`` did; and a mask drawn to the pixels has nothing to gain."""

    COARSE = "coarse"  # a segmenter's prediction scaled up (SAM3's); the default, chunk or not
    FITTED = "fitted"  # fitted to the photo by this worker
    EXACT = "exact"  # drawn to the photo's pixels (rendered, hand-painted)

    @property
    def follows_photo(self) -> bool:
        return self is not Outline.COARSE

    @classmethod
    def from_text(cls, value: object) -> Outline:
        """The outline a stored mask's text chunk names; coarse when absent or not one of these."""
        try:
            return cls(value)
        except ValueError:
            return cls.COARSE


class Instance:
    """One detected object: ``id``, ``score``, ``bbox`` (x0, y0, x1, y1 in result pixels; x1, y1
    exclusive), ``area`` (pixels) and its mask.

    The mask is kept cropped to the box and bit-packed: at 12 MP a mask is 12 MB as bools, and a
    job holds every instance of several photos at once. ``mask`` unpacks it at full size (bool
    H x W) on each access, ``crop`` just the box's part."""

    __slots__ = ("id", "score", "bbox", "area", "shape", "_bits")

    def __init__(self, id: int, score: float, bbox: tuple[int, int, int, int], mask: np.ndarray) -> None:
        """From a full-size mask, which must be empty outside ``bbox`` (ValueError otherwise)."""
        x0, y0, x1, y1 = (int(v) for v in bbox)
        crop = mask[y0:y1, x0:x1]
        self._store(id, score, (x0, y0, x1, y1), crop, mask.shape)
        if self.area != np.count_nonzero(mask):
            raise ValueError(f"instance {id}'s mask has pixels outside its box {self.bbox}")

    @classmethod
    def from_crop(cls, id: int, score: float, bbox: tuple[int, int, int, int], crop: np.ndarray,
                  shape: tuple[int, int]) -> Instance:
        """From the part of its mask inside ``bbox`` (bool, the box's size) in an image of ``shape``."""
        inst = cls.__new__(cls)
        inst._store(id, score, bbox, crop, shape)
        return inst

    def _store(self, id: int, score: float, bbox: tuple[int, int, int, int], crop: np.ndarray,
               shape: tuple[int, ...]) -> None:
        self.id, self.score = id, score
        self.bbox = tuple(int(v) for v in bbox)
        self.shape = (int(shape[0]), int(shape[1]))
        self.area = int(np.count_nonzero(crop))
        self._bits = np.packbits(crop, axis=1)

    @property
    def crop(self) -> np.ndarray:
        return np.unpackbits(self._bits, axis=1, count=self.bbox[2] - self.bbox[0]).view(bool)

    @property
    def mask(self) -> np.ndarray:
        full = np.zeros(self.shape, bool)
        x0, y0, x1, y1 = self.bbox
        full[y0:y1, x0:x1] = self.crop
        return full

    def __repr__(self) -> str:
        return f"Instance(id={self.id}, score={self.score:.3f}, bbox={self.bbox}, area={self.area})"


class ConceptMasks:
    """One concept's masks: its ``union`` (bool H x W on the host), its ``instances`` and how its
    ``outline`` stands to the photo (``Outline``).

    A segmenter or mask fit working on an editor's device hands the union over there
    (``on_device``, a bool tensor) and may leave the host copy out: ``union`` then copies it to
    the host on first use (mask PNGs, derived concepts), and an edit never needs it."""

    __slots__ = ("concept", "_union", "instances", "on_device", "outline")

    def __init__(self, concept: str, union: np.ndarray | None, instances: list[Instance] | None = None,
                 on_device: Any = None, outline: Outline = Outline.COARSE) -> None:
        if union is None and on_device is None:
            raise ValueError(f"{concept}: a union on the host or on the device is needed")
        self.concept, self._union, self.on_device, self.outline = concept, union, on_device, outline
        self.instances = [] if instances is None else instances

    @property
    def union(self) -> np.ndarray:
        if self._union is None:  # two threads may both copy: the same bytes either way
            self._union = self.on_device.cpu().numpy()
        return self._union

    @property
    def shape(self) -> tuple[int, int]:
        source = self._union if self._union is not None else self.on_device
        return (int(source.shape[0]), int(source.shape[1]))

    def holds_pixels(self) -> bool:
        """Whether the union has a pixel set, asked where the union is (no copy to the host)."""
        return bool((self._union if self._union is not None else self.on_device).any())

    @property
    def edit_mask(self) -> Any:
        """The union as the editor best takes it: on the device when it is there."""
        return self.union if self.on_device is None else self.on_device

    def __repr__(self) -> str:
        where = "host" if self.on_device is None else "device" if self._union is None else "host and device"
        return f"ConceptMasks({self.concept!r}, {self.shape}, {len(self.instances)} instances, {where})"


Segmentation = dict[str, ConceptMasks]


@dataclass(frozen=True)
class SegmentRequest:
    image: np.ndarray  # uint8, H x W x 3, RGB
    image_id: str  # the input key; for logs and for the file double


class Segmenter(Protocol):
    def segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> list[Segmentation]: ...

    def segment_each(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> Iterator[Segmentation]: ...


class SegmenterBase(ABC):
    """What every segmenter shares; a subclass that can stream overrides ``segment_each``."""

    @abstractmethod
    def segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> list[Segmentation]: ...

    def segment_each(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> Iterator[Segmentation]:
        yield from self.segment(requests, concepts)


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def instances_from_union(union: np.ndarray, multi_instance: bool, score: float = 1.0) -> list[Instance]:
    """Split a union mask into instances (connected components for multi-instance concepts)."""
    if not union.any():
        return []
    if not multi_instance:
        return [Instance(0, score, bbox_of(union), union)]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(union, dtype=np.uint8), connectivity=8)
    instances = []
    for label in range(1, count):
        x0, y0, w, h = (int(v) for v in stats[label, :4])
        # Each component compared within its own box: a speckled mask has thousands of them.
        crop = labels[y0:y0 + h, x0:x0 + w] == label
        instances.append(Instance.from_crop(len(instances), score, (x0, y0, x0 + w, y0 + h), crop, union.shape))
    return instances


class FileMaskSegmenter(SegmenterBase):
    """Serves ``{root}/{image_id without extension}/{Concept}.png`` (any nonzero pixel is in), with
    the ``Outline`` its ``Mask-Outline`` text chunk names (coarse without one).

    A concept with no file gets an empty mask; a photo with no folder at all is
    ``SegmentationUnavailable``, so a misconfigured double fails loudly instead of editing nothing.
    ``seconds_per_photo`` makes each call take a device's time (a sleep: no host CPU).
    """

    def __init__(self, root: Path, seconds_per_photo: float = 0.0) -> None:
        self.root = Path(root)
        self.seconds_per_photo = seconds_per_photo
        self.calls = 0

    def segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> list[Segmentation]:
        self.calls += 1
        if self.seconds_per_photo:
            time.sleep(self.seconds_per_photo * len(requests))
        return [self._one(req, concepts) for req in requests]

    def _one(self, req: SegmentRequest, concepts: Sequence[Concept]) -> Segmentation:
        folder = self.root / Path(req.image_id).with_suffix("")
        if not folder.is_dir():
            raise SegmentationUnavailable(
                "no segmentation model is loaded and the file segmenter has no masks for this photo"
            )
        h, w = req.image.shape[:2]
        result: Segmentation = {}
        for concept in concepts:
            path = folder / f"{concept.name}.png"
            outline = Outline.COARSE
            if path.is_file():
                with Image.open(path) as img:
                    mask_img = img.convert("L")
                    if mask_img.size != (w, h):
                        mask_img = mask_img.resize((w, h), Image.Resampling.NEAREST)
                    else:  # scaled, an outline no longer sits on the photo's pixels
                        outline = Outline.from_text(img.info.get(OUTLINE_TEXT_KEY))
                    union = np.asarray(mask_img) > 0
            else:
                union = np.zeros((h, w), dtype=bool)
            result[concept.name] = ConceptMasks(
                concept.name, union, instances_from_union(union, concept.multi_instance), outline=outline
            )
        return result


class UnavailableSegmenter(SegmenterBase):
    """Stands in when no model could be loaded: segmentation fails, ``apply`` jobs still run."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def segment(self, requests: Sequence[SegmentRequest], concepts: Sequence[Concept]) -> list[Segmentation]:
        raise SegmentationUnavailable(self.reason)

"""The fault matrix: each named case, run through the pipeline, ends with its contract code.

Cases about message shape and key scoping live in test_bad_messages.py; callback delivery
faults in test_callback.py. README lists the whole matrix.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.callback import RecordingCallbackSender
from engine.errors import DeviceFailure, GpuOutOfMemory, SegmentationError, StorageError
from engine.logs import configure_logging
from engine.pipeline import Pipeline
from engine.segmenter import FileMaskSegmenter, SegmenterBase
from engine.storage import LocalStorage
from tests.conftest import SECRET, make_job, make_settings

INPUT = "inputs/u_abc/job_123/0.jpg"
OUTPUT = "outputs/u_abc/job_123/0_result.png"


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def photo(mode: str = "RGB", size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    rgb = rng.integers(40, 220, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(rgb).convert(mode) if mode != "RGB" else Image.fromarray(rgb)


def with_orientation(orientation: int) -> bytes:
    img = photo(size=(60, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, "JPEG", exif=exif.tobytes(), quality=95)


def png_bomb(width=60_000, height=60_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class FlakyStorage(LocalStorage):
    """Fails every put to keys containing ``fail_on``."""

    def __init__(self, root: Path, fail_on: str) -> None:
        super().__init__(root)
        self.fail_on = fail_on

    def _put(self, key, data, content_type, metadata):
        if self.fail_on in key:
            raise StorageError(f"could not write {key} (InternalError)")
        super()._put(key, data, content_type, metadata)


class RaisingSegmenter(SegmenterBase):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def segment(self, requests, concepts):
        raise self.exc


class SlowSegmenter(FileMaskSegmenter):
    def segment(self, requests, concepts):
        import time
        time.sleep(1.0)
        return super().segment(requests, concepts)


@dataclass
class Case:
    name: str
    code: str | None  # None: the item is done
    data: bytes | None = None  # input object; None: not stored at all
    job: dict | None = None
    settings: dict | None = None
    segmenter: Callable[[Path], object] | None = None
    storage: Callable[[Path], LocalStorage] | None = None
    check: Callable[[LocalStorage, dict], None] | None = None


def output_image(storage: LocalStorage) -> Image.Image:
    return Image.open(io.BytesIO(storage.path_of(OUTPUT).read_bytes()))


def check_alpha(storage, item):
    img = output_image(storage)
    assert img.mode == "RGBA" and np.asarray(img)[..., 3].min() == 0


def check_rgb(storage, item):
    assert output_image(storage).mode == "RGB"


def check_oriented(orientation: int) -> Callable[[LocalStorage, dict], None]:
    def check(storage, item):
        # Orientations 5-8 are rotated by 90 degrees: the upright result swaps width and height.
        assert output_image(storage).size == ((40, 60) if orientation >= 5 else (60, 40))
    return check


def check_no_result(storage, item):
    assert not storage.path_of(OUTPUT).exists()
    assert item["output_key"] is None


SRGB_ICC = ImageCms.ImageCmsProfile(
    ImageCms.createProfile("sRGB")).tobytes()


def check_icc(storage, item):
    img = output_image(storage)
    img.load()
    assert img.info.get("icc_profile") == SRGB_ICC


rgba = photo("RGBA")
rgba_px = np.asarray(rgba).copy()
rgba_px[:5, :5, 3] = 0
rgba = Image.fromarray(rgba_px, "RGBA")
palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
gray16 = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)  # mode I;16

CASES = [
    Case("zero_byte_input", "UNSUPPORTED_IMAGE", b""),
    Case("truncated_jpeg", "UNSUPPORTED_IMAGE", encoded(photo(), "JPEG")[:300]),
    Case("corrupt_bytes", "UNSUPPORTED_IMAGE", bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8))),
    Case("text_not_an_image", "UNSUPPORTED_IMAGE", b"hello, I am a text file\n" * 20),
    Case("pdf_not_an_image", "UNSUPPORTED_IMAGE", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    Case("gif_unsupported_format", "UNSUPPORTED_IMAGE", encoded(photo(), "GIF")),
    Case("bmp_unsupported_format", "UNSUPPORTED_IMAGE", encoded(photo(), "BMP")),
    Case("decompression_bomb", "INPUT_TOO_LARGE", png_bomb()),
    Case("over_pixel_limit", "INPUT_TOO_LARGE", encoded(photo(), "PNG"), settings={"max_input_pixels": 1000}),
    Case("over_byte_limit", "INPUT_TOO_LARGE", encoded(photo(), "PNG"), settings={"max_input_bytes": 100}),
    Case("missing_input", "INPUT_NOT_FOUND", None),
    Case("cmyk_jpeg", None, encoded(photo("CMYK"), "JPEG"), check=check_rgb),
    Case("grayscale_jpeg", None, encoded(photo("L"), "JPEG"), check=check_rgb),
    Case("sixteen_bit_png", None, encoded(gray16, "PNG"), check=check_rgb),
    Case("palette_png", None, encoded(palette, "PNG"), check=check_rgb),
    Case("alpha_png_keeps_alpha", None, encoded(rgba, "PNG"), check=check_alpha),
    Case("icc_profile_kept", None, encoded(photo(), "JPEG", icc_profile=SRGB_ICC), check=check_icc),
    Case("webp_input", None, encoded(photo(), "WEBP", lossless=True), check=check_rgb),
    *[Case(f"exif_orientation_{o}", None, with_orientation(o), check=check_oriented(o)) for o in range(1, 9)],
    Case("extreme_aspect_ratio", None, encoded(photo(size=(2000, 3)), "PNG")),
    Case("scaled_to_output_limit", None, encoded(photo(size=(300, 100)), "PNG"), settings={"max_output_side": 120},
         check=lambda s, i: (output_image(s).size == (120, 40)) or pytest.fail("not scaled")),
    Case("result_upload_fails", "STORAGE_ERROR", encoded(photo(), "PNG"),
         storage=lambda root: FlakyStorage(root, "outputs/"), check=check_no_result),
    Case("mask_upload_fails", "STORAGE_ERROR", encoded(photo(), "PNG"),
         storage=lambda root: FlakyStorage(root, "masks/"), check=check_no_result),
    Case("gpu_out_of_memory", "GPU_OUT_OF_MEMORY", encoded(photo(), "PNG"),
         segmenter=lambda root: RaisingSegmenter(GpuOutOfMemory("CUDA out of memory"))),
    Case("segmentation_error", "SEGMENTATION_ERROR", encoded(photo(), "PNG"),
         segmenter=lambda root: RaisingSegmenter(SegmentationError("model failed on this photo"))),
    Case("device_failure", "SEGMENTATION_ERROR", encoded(photo(), "PNG"),
         segmenter=lambda root: RaisingSegmenter(DeviceFailure("CUDA error: an illegal memory access"))),
    Case("unexpected_bug_is_internal_error", "INTERNAL_ERROR", encoded(photo(), "PNG"),
         segmenter=lambda root: RaisingSegmenter(KeyError("/secret/internal/path"))),
    Case("item_timeout", "TIMEOUT", encoded(photo(), "PNG"), settings={"item_timeout_sec": 0.2},
         segmenter=lambda root: SlowSegmenter(root)),
    Case("apply_without_masks", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job={"stage": "apply"}),
]


def write_generic_masks(root: Path, key: str = INPUT) -> None:
    """Masks for ``key`` as tiny PNGs the file segmenter scales to any photo: wall = top half."""
    folder = root / Path(key).with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    top = np.array([[255, 255], [0, 0]], np.uint8)
    Image.fromarray(top).save(folder / "Wall.png")
    Image.fromarray(255 - top).save(folder / "Floor.png")
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(folder / "Window.png")


async def run_case(tmp_path: Path, case: Case) -> tuple[dict, LocalStorage, RecordingCallbackSender, Pipeline]:
    masks = tmp_path / "masks"
    write_generic_masks(masks)
    store = tmp_path / "store"
    storage = case.storage(store) if case.storage else LocalStorage(store)
    if case.data is not None:
        storage._put(INPUT, case.data, "application/octet-stream", {})
    segmenter = case.segmenter(masks) if case.segmenter else FileMaskSegmenter(masks)
    sender = RecordingCallbackSender()
    pipeline = Pipeline(make_settings(**(case.settings or {})), storage, segmenter, sender)
    job = make_job(1, protect=["Window"], **(case.job or {}))
    result = (await pipeline.run_job(job)).to_dict()
    return result, storage, sender, pipeline


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault_matrix(tmp_path, case):
    result, storage, sender, pipeline = await run_case(tmp_path, case)
    (item,) = result["items"]
    assert item["error_code"] == case.code, item
    assert item["status"] == ("done" if case.code is None else "failed")
    # Exactly one terminal callback, agreeing with the return.
    assert len(sender.sent) == 1
    payload = sender.sent[0][1]
    assert payload["status"] == item["status"] and payload["error_code"] == case.code
    if case.code is not None:
        assert payload["output_key"] is None and payload["preview_key"] is None
        assert payload["error"] and "Traceback" not in payload["error"] and "/secret" not in payload["error"]
        assert str(storage.root) not in payload["error"]
    if case.check:
        case.check(storage, item)
    assert pipeline.needs_fresh_worker == (case.name == "device_failure")


async def test_every_input_case_in_one_job_ends_each_item_with_its_own_outcome(tmp_path):
    """The matrix's input cases as the items of one job: a photo that fails never changes another
    item's outcome, and every item gets exactly one terminal callback."""
    cases = [c for c in CASES if c.data is not None and not (c.settings or c.segmenter or c.storage or c.job)]
    storage = LocalStorage(tmp_path / "store")
    for i, case in enumerate(cases):
        key = f"inputs/u_abc/job_123/{i}.jpg"
        storage._put(key, case.data, "application/octet-stream", {})
        write_generic_masks(tmp_path / "masks", key)
    sender = RecordingCallbackSender()
    pipeline = Pipeline(make_settings(), storage, FileMaskSegmenter(tmp_path / "masks"), sender)
    result = (await pipeline.run_job(make_job(len(cases), protect=["Window"], batch_concurrency=4))).to_dict()
    outcomes = {item["idx"]: item["error_code"] for item in result["items"]}
    assert outcomes == {i: case.code for i, case in enumerate(cases)}
    assert sorted(payload["idx"] for _, payload, _ in sender.sent) == list(range(len(cases)))
    assert {payload["idx"]: payload["error_code"] for _, payload, _ in sender.sent} == outcomes
    assert result["status"] == "partial"


async def test_secrets_never_reach_logs_errors_or_callbacks(tmp_path):
    stream = io.StringIO()
    configure_logging("debug", stream)
    try:
        case = Case("secret_probe", "INTERNAL_ERROR", encoded(photo(), "PNG"),
                    segmenter=lambda root: RaisingSegmenter(RuntimeError(f"boom {SECRET}")))
        result, _, sender, _ = await run_case(tmp_path, case)
    finally:
        configure_logging("info")
    everything = stream.getvalue() + json.dumps(result) + json.dumps([p for _, p, _ in sender.sent])
    assert SECRET not in everything
    assert '"job_id": "job_123"' in stream.getvalue() and '"idx": 0' in stream.getvalue()
    for line in stream.getvalue().splitlines():
        json.loads(line)  # one JSON object per line

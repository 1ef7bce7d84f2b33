"""Fault-matrix cases for what an input photo carries besides its pixels (ICC profiles) and for
what its decode costs (16-bit greyscale), through the whole pipeline."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.postprocess import MAX_ICC_BYTES, decode_image, decoded_cost_bytes, usable_icc_profile
from tests.test_fault_matrix import SRGB_ICC, Case, encoded, output_image, photo, run_case

GREY_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
GARBAGE_ICC_4MB = np.random.default_rng(7).integers(0, 256, 4 * 1024 * 1024, dtype=np.uint8).tobytes()
GARBAGE_ICC_SMALL = b"\x00\x00\x02\x00not a profile" * 40


def check_no_icc(storage, item):
    img = output_image(storage)
    img.load()  # the whole result reads back
    assert "icc_profile" not in img.info and img.mode == "RGB"


ICC_CASES = [
    Case("icc_profile_garbage_4mb", None, encoded(photo(), "JPEG", icc_profile=GARBAGE_ICC_4MB), check=check_no_icc),
    Case("icc_profile_garbage_small", None, encoded(photo(), "JPEG", icc_profile=GARBAGE_ICC_SMALL),
         check=check_no_icc),
    Case("icc_profile_not_rgb", None, encoded(photo(), "PNG", icc_profile=GREY_ICC), check=check_no_icc),
]


@pytest.mark.parametrize("case", ICC_CASES, ids=[c.name for c in ICC_CASES])
async def test_an_unusable_icc_profile_is_dropped_and_logged(tmp_path, caplog, case):
    caplog.set_level(logging.INFO, logger="worker.decode")
    result, storage, sender, _ = await run_case(tmp_path, case)
    (item,) = result["items"]
    assert item["status"] == "done" and [p["status"] for _, p, _ in sender.sent] == ["done"]
    case.check(storage, item)
    dropped = [r for r in caplog.records if r.getMessage() == "icc_profile.dropped"]
    assert len(dropped) == 1 and dropped[0].reason


def test_icc_profile_rules():
    assert usable_icc_profile(SRGB_ICC, "RGB") == SRGB_ICC
    assert usable_icc_profile(SRGB_ICC, "CMYK") is None
    assert usable_icc_profile(SRGB_ICC + b"\0" * MAX_ICC_BYTES, "RGB") is None  # parses, but too large
    assert usable_icc_profile(GREY_ICC, "RGB") is None
    assert usable_icc_profile(None, "RGB") is None and usable_icc_profile(b"", "RGB") is None


def grey16_png(width: int, height: int) -> bytes:
    ramp = np.linspace(0, 65535, width).astype(np.uint16)
    return encoded(Image.fromarray(np.broadcast_to(ramp, (height, width)).copy()), "PNG")


def check_grey_ramp(storage, item):
    result = np.asarray(output_image(storage).convert("RGB")).astype(int)
    assert result.shape == (150, 200, 3)
    assert result[:, 0].max() < 8 and result[:, -1].min() > 240  # black to white, not clipped at 255/65535


GREY16_CASES = [
    Case("sixteen_bit_grey_png_scaled", None, grey16_png(2000, 1500), settings={"max_output_side": 200},
         job={"concepts": {"Window": {"action": "tone", "value": "warm"}}}, check=check_grey_ramp),
]


@pytest.mark.parametrize("case", GREY16_CASES, ids=[c.name for c in GREY16_CASES])
async def test_sixteen_bit_grey(tmp_path, case):
    result, storage, _, _ = await run_case(tmp_path, case)
    assert result["items"][0]["status"] == "done", result
    case.check(storage, result["items"][0])


def test_a_sixteen_bit_png_is_brought_to_8_bits_without_a_wide_copy():
    """Python-side allocations (numpy's) while decoding a 3 MP 16-bit greyscale PNG to a small
    result: the 8-bit copy and a strip at a time, not the photo at 32 bits (12 bytes a pixel
    over three arrays)."""
    data = grey16_png(2000, 1500)
    tracemalloc.start()
    try:
        image = decode_image(data, max_pixels=10**8, max_side=200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.rgb.shape == (150, 200, 3)
    assert peak < 2 * 2000 * 1500, peak


def test_decoded_cost_follows_the_header_not_the_pixel_count():
    grey8 = encoded(Image.fromarray(np.zeros((1500, 2000), np.uint8)), "PNG")
    grey16 = grey16_png(2000, 1500)
    rgb_jpeg = encoded(photo(size=(2000, 1500)), "JPEG")
    rgba_png = encoded(photo("RGBA", size=(2000, 1500)), "PNG")
    costs = {name: decoded_cost_bytes(data, 4096) for name, data in
             [("grey8", grey8), ("grey16", grey16), ("rgb", rgb_jpeg), ("rgba", rgba_png)]}
    assert costs["grey8"] < costs["grey16"] and costs["rgb"] < costs["rgba"]
    assert decoded_cost_bytes(grey16, 200) - decoded_cost_bytes(grey8, 200) >= 2000 * 1500  # a byte a pixel more
    # A JPEG far above the output size is decoded reduced: its cost follows the reduced size.
    assert decoded_cost_bytes(rgb_jpeg, 400) < costs["rgb"] / 8
    assert decoded_cost_bytes(b"not an image", 4096) == 0


def test_decoded_cost_bounds_what_the_decode_holds():
    """The estimate against tracemalloc's count of numpy's allocations plus Pillow's image sizes
    (which tracemalloc does not see): never below what the numpy side alone holds."""
    for data in (grey16_png(2000, 1500), encoded(photo(size=(2000, 1500)), "JPEG")):
        tracemalloc.start()
        try:
            decode_image(data, max_pixels=10**8, max_side=4096)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= decoded_cost_bytes(data, 4096)


def test_the_memory_budget_counts_the_decoded_cost():
    from engine.budget import estimate_decoded_bytes

    grey8 = encoded(Image.fromarray(np.zeros((1500, 2000), np.uint8)), "PNG")
    grey16 = grey16_png(2000, 1500)
    big_jpeg = encoded(photo(size=(4000, 3000)), "JPEG")
    assert estimate_decoded_bytes(grey16, 4096) - estimate_decoded_bytes(grey8, 4096) == (
        decoded_cost_bytes(grey16, 4096) - decoded_cost_bytes(grey8, 4096)) >= 2000 * 1500
    # Decoded at half size for a 1000-pixel result: the reduced decode is what is counted.
    assert estimate_decoded_bytes(big_jpeg, 1000) < 4000 * 3000 * 3

"""The parallel PNG writer: lossless for every shape and strip count, read back by two decoders."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from engine.png import write_png
from engine.postprocess import encode_mask, encode_png, encode_thumbnail, thumbnail_pixels


def read_back(png: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(Pillow's pixels, OpenCV's pixels in RGB order) of a PNG."""
    pillow = np.asarray(Image.open(io.BytesIO(png)))
    opencv = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if opencv.ndim == 3:
        opencv = cv2.cvtColor(opencv, cv2.COLOR_BGR2RGB if opencv.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return pillow, opencv


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), channels=st.sampled_from([0, 2, 3, 4]),
       threads=st.integers(1, 8), level=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_any_shape_and_strip_count_round_trips(height, width, channels, threads, level, seed):
    shape = (height, width) if channels == 0 else (height, width, channels)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    pillow, opencv = read_back(write_png(pixels, threads=threads, level=level))
    assert np.array_equal(pillow, pixels)
    if channels != 2:  # OpenCV reads grey+alpha as BGRA
        assert np.array_equal(opencv, pixels)


def test_a_photo_split_into_many_strips_is_one_valid_zlib_stream():
    rng = np.random.default_rng(1)
    gradient = np.linspace(0, 255, 1200, dtype=np.float32)[None, :, None] + rng.normal(0, 3, (900, 1200, 3))
    pixels = np.clip(gradient, 0, 255).astype(np.uint8)
    png = write_png(pixels, threads=7)
    pillow, opencv = read_back(png)
    assert np.array_equal(pillow, pixels) and np.array_equal(opencv, pixels)
    # The IDAT payload decompresses as one stream (zlib checks the Adler-32 of all the rows).
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    rows = zlib.decompress(idat)
    assert len(rows) == 900 * (1200 * 3 + 1) and rows[::1200 * 3 + 1] == b"\x02" * 900


def test_the_result_png_keeps_alpha_and_the_icc_profile():
    rgb = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    alpha = np.random.default_rng(3).integers(0, 256, (30, 40), dtype=np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.open(io.BytesIO(encode_png(rgb, alpha, icc, 1)))
    assert img.mode == "RGBA" and img.info["icc_profile"] == icc
    assert np.array_equal(np.asarray(img)[..., :3], rgb) and np.array_equal(np.asarray(img)[..., 3], alpha)


def test_masks_are_written_as_0_255_grey():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 3:17] = True
    img = Image.open(io.BytesIO(encode_mask(mask)))
    assert img.mode == "L" and set(np.unique(np.asarray(img))) == {0, 255}
    assert np.array_equal(np.asarray(img) == 255, mask)


@pytest.mark.parametrize("pixels", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 5), np.uint8),
                                    np.zeros((0, 4, 3), np.uint8), np.zeros(4, np.uint8)])
def test_what_png_cannot_hold_is_refused(pixels):
    with pytest.raises(ValueError, match="write_png"):
        write_png(pixels)


@pytest.mark.parametrize(("shape", "expected"), [((3000, 4000), (300, 225)), ((4000, 1000), (75, 300)),
                                                 ((160, 240), (240, 160)), ((5000, 1), (1, 300))])
def test_thumbnail_fits_the_side_keeps_the_aspect_and_never_enlarges(shape, expected):
    rgb = np.full((*shape, 3), (200, 60, 30), np.uint8)
    thumb = Image.open(io.BytesIO(encode_thumbnail(rgb, 300)))
    assert thumb.format == "JPEG" and thumb.size == expected
    assert np.abs(np.asarray(thumb).astype(int) - (200, 60, 30)).max() <= 3


def test_thumbnail_of_a_large_photo_is_the_area_filters_within_a_few_levels():
    """Averaged over whole blocks first (4000 x 3000: blocks of 5), then area-filtered: the
    thumbnail is the one-step area filter's within a few levels."""
    from devtools.scenes import render_room

    room, _ = render_room(800, 600, seed=2)
    big = cv2.resize(room, (4000, 3000), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng(2).normal(0, 2.5, big.shape).astype(np.float32)
    photo = np.clip(big, 0, 255).astype(np.uint8)
    one_step = cv2.resize(photo, (300, 225), interpolation=cv2.INTER_AREA).astype(int)
    thumb = thumbnail_pixels(photo, 300)
    assert thumb.shape == (225, 300, 3)
    diff = np.abs(thumb.astype(int) - one_step)
    assert diff.max() <= 6 and diff.mean() < 0.5


def test_thumbnail_of_a_size_without_a_common_block_is_the_one_step_area_filter():
    photo = np.random.default_rng(3).integers(0, 256, (2999, 4001, 3), np.uint8)
    one_step = cv2.resize(photo, (300, 225), interpolation=cv2.INTER_AREA)
    assert np.array_equal(thumbnail_pixels(photo, 300), one_step)

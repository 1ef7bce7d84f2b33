"""The torchvision JPEG path (nvJPEG on a GPU worker) against Pillow's decode.

Without a GPU these run torchvision's CPU decoder, so what is checked is everything around the
decoder: which files take the path, EXIF orientation, the ICC profile, fitting to the output size
and the fallback to Pillow. Where CUDA is present the orientation test also runs on nvJPEG.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import UnsupportedImage
from engine.postprocess import decode_image, gpu_jpeg_device, rgb_pixels

LIMITS = {"max_pixels": 10**8, "max_side": 4096}
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def jpeg(width: int = 96, height: int = 64, *, mode: str = "RGB", orientation: int | None = None, **params) -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    img = Image.fromarray(rgb).convert(mode)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=92, **params)
    return out.getvalue()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("orientation", [None, *range(1, 9)])
def test_torchvision_decode_matches_pillow_with_exif_orientation(orientation, device):
    data = jpeg(orientation=orientation)
    fast = decode_image(data, jpeg_device=device, **LIMITS)
    reference = decode_image(data, **LIMITS)
    assert fast.rgb.shape == reference.rgb.shape == ((96, 64, 3) if (orientation or 1) >= 5 else (64, 96, 3))
    # libjpeg-turbo on the CPU is within rounding of Pillow (the same library); nvJPEG upsamples
    # chroma and rounds its IDCT differently: up to 3 levels apart on an H100.
    assert np.abs(fast.rgb.astype(int) - reference.rgb.astype(int)).max() <= (1 if device == "cpu" else 4)
    assert fast.alpha is None


def test_icc_profile_and_output_fitting_are_kept_on_the_fast_path():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    fast = decode_image(jpeg(400, 200, icc_profile=icc), jpeg_device="cpu", max_pixels=10**8, max_side=300)
    assert fast.size == (300, 150) and fast.icc_profile == icc


@pytest.mark.parametrize("data", [jpeg(mode="L"), jpeg(mode="CMYK"), jpeg(2000, 100)], ids=["gray", "cmyk", "draft"])
def test_other_jpegs_take_pillows_path(data, monkeypatch):
    refuse_torchvision(monkeypatch)
    decoded = decode_image(data, jpeg_device="cpu", max_pixels=10**8, max_side=500)
    assert decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3


def test_truncated_jpeg_is_left_to_pillow_which_names_it(monkeypatch):
    refuse_torchvision(monkeypatch)  # cut short, it has no end-of-image marker
    with pytest.raises(UnsupportedImage, match="truncated or corrupt"):
        decode_image(jpeg()[:-10], jpeg_device="cpu", **LIMITS)


def test_a_jpeg_the_decoder_refuses_falls_back_to_pillow_which_names_it():
    data = bytearray(jpeg())
    data[-40:-2] = b"\xff\xd8" * 19  # a damaged scan that still ends with the end-of-image marker
    with pytest.raises(UnsupportedImage, match="truncated or corrupt"):
        decode_image(bytes(data), jpeg_device="cpu", **LIMITS)


def refuse_torchvision(monkeypatch) -> None:
    import torchvision.io

    def refuse(*args, **kwargs):
        raise AssertionError("torchvision decode used")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)


def test_gpu_decode_is_off_without_cuda_or_when_disabled():
    assert gpu_jpeg_device(False) is None
    import torch

    assert gpu_jpeg_device(True) == ("cuda" if torch.cuda.is_available() else None)


@pytest.mark.parametrize("device", [None, "cpu"])
def test_decoded_pixels_are_writable_so_the_segmenter_need_not_copy_them(device):
    decoded = decode_image(jpeg(), jpeg_device=device, max_pixels=10**8, max_side=4096)
    assert decoded.rgb.flags.writeable and decoded.rgb.flags.c_contiguous


@pytest.mark.parametrize("size", [(1, 1), (97, 3), (640, 480), (17000, 2)], ids=str)
def test_pixels_read_out_block_by_block_are_pillows(size):
    """``rgb_pixels`` packs Pillow's pixels a block at a time into one array: any width (wider
    than a block too), any number of blocks, the same bytes as Pillow's own read-out."""
    width, height = size
    rgb = np.random.default_rng(width).integers(0, 256, (height, width, 3), np.uint8)
    img = Image.fromarray(rgb)
    pixels = rgb_pixels(img)
    assert np.array_equal(pixels, np.asarray(img)) and np.array_equal(pixels, rgb)
    assert pixels.flags.writeable and pixels.flags.c_contiguous and pixels.dtype == np.uint8

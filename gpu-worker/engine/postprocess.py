"""Image decode and encode: what goes into the pipeline and what is written back.

Decode: format check, pixel limit before decoding (decompression bombs), EXIF orientation,
every mode brought to 8-bit RGB (+ alpha), scaled so the longest side fits the output limit.
Encode: result PNG (ICC kept), JPEG thumbnail. Masks as stored between stages (mask PNGs, the
instances file) are written and read by ``engine.stored_masks``, re-exported here.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InputTooLarge, UnsupportedImage
from engine.png import write_png
from engine.stored_masks import (decode_instances, decode_mask, encode_instances, encode_mask, rle_decode,
                                 rle_decode_box, rle_encode_box)

__all__ = ["DecodedImage", "decode_image", "encode_png", "encode_thumbnail", "gpu_jpeg_device", "orient",
           "decode_instances", "decode_mask", "encode_instances", "encode_mask", "rle_decode", "rle_decode_box",
           "rle_encode_box"]

SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "HEIF"}

try:  # HEIC where supported: pillow-heif registers the HEIF format with Pillow.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass

# We check the pixel count ourselves, before decoding, with our own limit.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class DecodedImage:
    rgb: np.ndarray  # uint8 H x W x 3
    alpha: np.ndarray | None  # uint8 H x W, when the input has transparency
    icc_profile: bytes | None

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def _to_8bit_rgba(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(RGB image, alpha channel or None) for any Pillow mode."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        peak = 65535 if img.mode.startswith("I;16") or arr.max() > 255 else 255
        img = Image.fromarray((arr * 255 // peak).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA" if ("transparency" in img.info or img.mode == "PA") else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = img.getchannel("A")
        return img.convert("RGB"), alpha
    return (img if img.mode == "RGB" else img.convert("RGB")), None


def decode_image(data: bytes, *, max_pixels: int, max_side: int, jpeg_device: str | None = None) -> DecodedImage:
    """Bytes -> 8-bit RGB (+ alpha) upright and fitted to ``max_side``. With ``jpeg_device``
    (``"cuda"`` on a GPU worker) plain RGB JPEGs are decoded there by torchvision (nvJPEG)."""
    if not data:
        raise UnsupportedImage("the input is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedImage(f"unsupported image format {img.format}; use JPEG, PNG, WebP or HEIC")
            width, height = img.size
            if width * height > max_pixels:
                raise InputTooLarge(f"image is {width}x{height}; the limit is {max_pixels} pixels (MAX_INPUT_PIXELS)")
            if width < 1 or height < 1:
                raise UnsupportedImage("image has no pixels")
            source_mode = img.mode
            icc = img.info.get("icc_profile")
            fast = _decode_jpeg_on(jpeg_device, data, img, max_side) if jpeg_device else None
            if fast is not None:
                rgb, alpha = Image.fromarray(fast), None
            else:
                _decode_reduced(img, max_side)
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright photo
                rgb, alpha = _to_8bit_rgba(img)
    except (UnsupportedImage, InputTooLarge):
        raise
    except UnidentifiedImageError as exc:
        raise UnsupportedImage("the input is not a recognised image") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnsupportedImage("the image is truncated or corrupt") from exc
    # An ICC profile describes the source's colour space: keep it only when that is RGB.
    if source_mode not in ("RGB", "RGBA", "P", "PA"):
        icc = None
    rgb, alpha = _fit(rgb, alpha, max_side)
    # Writable: the segmenter hands it to torch as is; a read-only array it would have to copy
    # while holding the device, here the copy runs in the decoding thread.
    pixels = np.asarray(rgb)
    return DecodedImage(pixels if pixels.flags.writeable else pixels.copy(),
                        None if alpha is None else np.asarray(alpha), icc)


def _decode_jpeg_on(device: str, data: bytes, img: Image.Image, max_side: int) -> np.ndarray | None:
    """A plain RGB JPEG decoded by torchvision on ``device``, EXIF orientation applied, as
    uint8 H x W x 3 on the host; None where Pillow does better (other modes, a reduced-size
    decode, no end-of-image marker) or the decoder refuses the file (Pillow then decodes it or
    names the error).

    The decode runs on its own CUDA stream: nvJPEG's output is allocated on the caller's stream
    but written from a private one, so on the shared default stream it could be handed memory
    that segmentation kernels queued there are still reading (pytorch/vision#9606)."""
    if img.format != "JPEG" or img.mode != "RGB" or max(img.size) > 2 * max_side:
        return None
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):  # truncated: nvJPEG may not say so; Pillow does
        return None
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    # Orientation is applied here, not by decode_jpeg: torchvision's CUDA decoder ignores
    # apply_exif_orientation, and one code path keeps CPU tests meaningful for the GPU.
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    try:
        if device.startswith("cuda"):
            with torch.cuda.stream(_decode_stream(device)):
                decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
                return orient(decoded, orientation).permute(1, 2, 0).cpu().numpy()  # the copy waits for the decode
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
        return orient(decoded, orientation).permute(1, 2, 0).contiguous().numpy()
    except RuntimeError:
        return None


EXIF_ORIENTATION = 0x0112


def orient(image: "torch.Tensor", orientation: int) -> "torch.Tensor":
    """A C x H x W image turned upright for its EXIF orientation (1-8), as ``ImageOps.exif_transpose``."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, (-2, -1))
    return image


@lru_cache(maxsize=None)
def _decode_stream(device: str) -> object:
    """The CUDA stream JPEG decodes run on, shared by the decoding threads."""
    import torch

    return torch.cuda.Stream(device=device)


def gpu_jpeg_device(enabled: bool) -> str | None:
    """``"cuda"`` when GPU JPEG decoding is enabled and a GPU is present, else None."""
    if not enabled:
        return None
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _decode_reduced(img: Image.Image, max_side: int) -> None:
    """For JPEG, let the decoder skip resolution we would throw away (DCT scaling)."""
    if img.format in ("JPEG", "MPO") and max(img.size) > 2 * max_side:
        scale = max(img.size) / max_side
        img.draft(img.mode, (int(img.size[0] / scale * 1.01) + 1, int(img.size[1] / scale * 1.01) + 1))


def _fit(rgb: Image.Image, alpha: Image.Image | None, max_side: int) -> tuple[Image.Image, Image.Image | None]:
    width, height = rgb.size
    if max(width, height) <= max_side:
        return rgb, alpha
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if alpha is not None:
        alpha = alpha.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb, alpha


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None, icc_profile: bytes | None, compress_level: int) -> bytes:
    """The result as lossless PNG (RGBA when the input had transparency), ICC profile kept."""
    pixels = rgb if alpha is None else np.dstack((rgb, alpha))
    return write_png(pixels, icc_profile=icc_profile, level=compress_level)


def encode_thumbnail(rgb: np.ndarray, side: int, quality: int = 85) -> bytes:
    """JPEG whose longest side is ``side`` (never enlarged). OpenCV's area filter reads the
    array in place; Pillow would first copy the whole photo."""
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    out = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()

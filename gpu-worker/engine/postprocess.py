"""Image decode and encode: what goes into the pipeline and what is written back.

Decode: format check, pixel limit before decoding (decompression bombs), EXIF orientation,
every mode brought to 8-bit RGB (+ alpha), scaled so the longest side fits the output limit.
Encode: result PNG (ICC kept), JPEG thumbnail. Masks as stored between stages (mask PNGs, the
instances file) are written and read by ``engine.stored_masks``, re-exported here.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from engine.errors import InputTooLarge, UnsupportedImage
from engine.png import write_png
from engine.stored_masks import (decode_instances, decode_mask, encode_instances, encode_mask, rle_decode,
                                 rle_decode_box, rle_encode_box)

__all__ = ["DecodedImage", "decode_image", "rgb_pixels", "encode_png", "encode_thumbnail", "thumbnail_pixels",
           "gpu_jpeg_device", "orient", "decode_instances", "decode_mask", "encode_instances", "encode_mask", "rle_decode", "rle_decode_box",
           "rle_encode_box"]

log = logging.getLogger("worker.decode")

MAX_ICC_BYTES = 1 << 20
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


GREY_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
STRIP_PIXELS = 1 << 18  # a wide greyscale image is brought to 8 bits this many pixels at a time


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit ``L``, a strip of rows at a time: besides
    the decoded image only the 8-bit result and one strip's arithmetic are ever held."""
    width, height = img.size
    high = img.getextrema()[1]
    peak = 255 if img.mode == "F" or not (img.mode.startswith("I;16") or high > 255) else 65535
    rows = max(1, STRIP_PIXELS // width)
    out = np.empty((height, width), np.uint8)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = np.asarray(img.crop((0, top, width, bottom)))
        if img.mode == "F":
            out[top:bottom] = np.clip(strip, 0, 255)
            continue
        wide = strip.astype(np.uint32) if strip.dtype.kind == "u" else np.clip(strip, 0, None).astype(np.uint32)
        np.minimum(wide, peak, out=wide)
        wide *= 255
        wide //= peak
        out[top:bottom] = wide
    return Image.fromarray(out, "L")


def _to_8bit_rgba(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(8-bit colour image, alpha channel or None) for any Pillow mode. The colour image is RGB,
    or L for greyscale: a greyscale photo is fitted to the output size before it becomes RGB."""
    if img.mode in GREY_WIDE_MODES:
        img = _to_8bit_grey(img)
    if img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA" if ("transparency" in img.info or img.mode == "PA") else "RGB")
    if img.mode == "LA":
        return img.getchannel("L"), img.getchannel("A")
    if img.mode == "RGBA":
        alpha = img.getchannel("A")
        return img.convert("RGB"), alpha
    return (img if img.mode in ("RGB", "L") else img.convert("RGB")), None


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
    icc = usable_icc_profile(icc, source_mode)
    rgb, alpha = _fit(rgb, alpha, max_side)
    if rgb.mode != "RGB":
        rgb = rgb.convert("RGB")
    return DecodedImage(rgb_pixels(rgb), None if alpha is None else np.asarray(alpha), icc)


def rgb_pixels(img: Image.Image) -> np.ndarray:
    """An RGB image's pixels as a writable uint8 H x W x 3 array, packed by Pillow's raw encoder
    straight into it a block at a time. Writable: the segmenter hands it to torch as is.
    (``np.asarray`` packs them into blocks, joins those into one bytes object and gives a
    read-only view of it, so a writable array took two more full-size copies: 85 ms against
    36 ms at 12 MP on x86_64.)"""
    img.load()
    width, height = img.size
    out = np.empty((height, width, 3), np.uint8)
    flat = out.reshape(-1)
    encoder = Image._getencoder("RGB", "raw", "RGB")
    encoder.setimage(img.im, (0, 0, width, height))
    filled, status = 0, 0
    try:
        while status == 0:
            _, status, block = encoder.encode(max(ImageFile.MAXBLOCK, width * 4))
            flat[filled:filled + len(block)] = np.frombuffer(block, np.uint8)
            filled += len(block)
    finally:
        encoder.cleanup()
    if status < 0 or filled != flat.size:
        raise UnsupportedImage("the image could not be read out")
    return out


# Bytes a pixel takes as Pillow holds each decoded mode; 8-bit RGB(A) output per pixel.
_HELD_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4,
               "CMYK": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
# Full-size 8-bit copies a mode needs on its way to RGB (bytes a pixel): P -> RGBA, CMYK -> RGB,
# RGBA -> RGB + alpha, 16-bit grey -> L (strips beside it are small).
_CONVERTED_BYTES = {"P": 4, "PA": 4, "LA": 2, "RGBA": 4, "CMYK": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
                    "I;16": 1, "I;16B": 1, "I;16L": 1, "I": 1, "F": 1}


def decoded_cost_bytes(data: bytes, max_side: int) -> int:
    """Host bytes a photo holds at the peak of ``decode_image``, read from its header alone: the
    decoded source as Pillow holds its mode (after JPEG's reduced-size decode), the full-size
    8-bit copy its mode needs, a rotated copy where EXIF asks for one, and the fitted result. An
    estimate for a memory budget, within the allocator's slack of what the decode holds.
    A 16-bit photo costs more than an 8-bit one of the same pixel count. 0 when the header is
    unreadable: decoding it fails at once."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            _decode_reduced(img, max_side)  # sets the reduced size from the header; decodes nothing
            width, height = img.size
            mode = img.mode
            rotated = img.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
    except (OSError, ValueError, SyntaxError, TypeError, Image.DecompressionBombError):
        return 0
    pixels = width * height
    held = pixels * _HELD_BYTES.get(mode, 4)
    converted = pixels * _CONVERTED_BYTES.get(mode, 0)
    scale = min(1.0, max_side / max(width, height, 1))
    fitted = round(width * scale) * round(height * scale) * (4 if mode in ("RGBA", "LA", "PA", "P") else 3)
    # The result's bytes and the writable array made of them; and the fitted image itself unless
    # it is the decoded RGB photo, counted above.
    copies = 2 if (scale == 1.0 and mode == "RGB") else 3
    return held * (2 if rotated else 1) + converted + copies * fitted


def usable_icc_profile(icc: bytes | None, source_mode: str) -> bytes | None:
    """The photo's ICC profile when the result may carry it: at most ``MAX_ICC_BYTES``, parsed by
    LittleCMS, describing RGB colours of RGB pixels. Anything else is dropped (and logged): a
    result whose profile no reader can parse, or that names another colour space, is worse than
    one without."""
    if not icc:
        return None
    problem = _icc_problem(icc, source_mode)
    if problem is None:
        return icc
    log.info("icc_profile.dropped", extra={"reason": problem, "bytes": len(icc)})
    return None


def _icc_problem(icc: bytes, source_mode: str) -> str | None:
    if len(icc) > MAX_ICC_BYTES:
        return f"the profile is over {MAX_ICC_BYTES} bytes"
    if source_mode not in ("RGB", "RGBA", "P", "PA"):
        return f"the photo's pixels are {source_mode}, not RGB"
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return "the profile does not parse"
    if space != "RGB":
        return f"the profile describes {space} colours, not RGB"
    return None


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
    """JPEG whose longest side is ``side`` (never enlarged), of ``thumbnail_pixels``."""
    out = io.BytesIO()
    Image.fromarray(thumbnail_pixels(rgb, side), "RGB").save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def thumbnail_pixels(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` reduced by area averaging so that its longest side is ``side`` (never enlarged).
    OpenCV's area filter reads the array in place (Pillow would first copy the whole photo). A
    large photo is first averaged over whole blocks of pixels, down to at least twice the
    thumbnail: OpenCV does that at a fraction of the cost of an area filter of uneven ratio over
    the full photo (12 MP to 300 px: 0.029 against 0.060 CPU s on x86_64), and the thumbnail
    differs from the one-step filter's by a few levels at most."""
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    block = _whole_block(width, height, size)
    if block > 1:
        rgb = cv2.resize(rgb, (width // block, height // block), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _whole_block(width: int, height: int, size: tuple[int, int]) -> int:
    """The largest block side dividing both ``width`` and ``height`` that leaves at least twice
    ``size`` (W, H); 1 when there is none."""
    most = min(width // (2 * size[0]), height // (2 * size[1]))
    return next((b for b in range(most, 1, -1) if width % b == 0 and height % b == 0), 1)

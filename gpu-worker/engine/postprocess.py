"""Image decode and encode: what goes into the pipeline and what is written back.

Decode: format check, pixel limit before decoding (decompression bombs), EXIF orientation,
every mode brought to 8-bit RGB (+ alpha), scaled so the longest side fits the output limit.
Encode: result PNG (ICC kept), JPEG thumbnail, 0/255 mask PNGs, the instances file.

Instances file (``{idx}_instances.json``)::

    {"width": W, "height": H,
     "concepts": {"Door": [{"id": 0, "score": 0.91, "bbox": [x0, y0, x1, y1], "area": 1234,
                            "rle": [z0, o0, z1, o1, ...]}]}}

``rle`` is the instance mask in the result's pixel space, row-major (C order) over the whole
W x H image, as alternating run lengths that start with a run of zeros (possibly 0).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InputTooLarge, UnsupportedImage
from engine.png import write_png
from engine.segmenter import Instance, Segmentation

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


def encode_mask(mask: np.ndarray) -> bytes:
    return write_png(np.multiply(mask, 255, dtype=np.uint8))


def decode_mask(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """A stored mask as bool H x W, or None when it is not a mask of this size."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != size:
                return None
            return np.asarray(img.convert("L")) > 127
    except (OSError, ValueError, UnidentifiedImageError):
        return None


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


def rle_decode(runs: list[int], width: int, height: int) -> np.ndarray:
    if sum(runs) != width * height:
        raise ValueError("run lengths do not cover the image")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)


def rle_decode_box(runs: list[int], box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The part inside ``box`` (x0, y0, x1, y1) of the ``size`` (W, H) mask ``runs`` encode, working
    on the box's rows only. ValueError when the runs do not cover the image exactly or set a
    pixel outside the box."""
    (x0, y0, x1, y1), (width, height) = box, size
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} is not inside a {width}x{height} image")
    lengths = np.asarray(runs, np.int64)
    if lengths.ndim != 1 or (lengths < 0).any() or int(lengths.sum()) != width * height:
        raise ValueError("run lengths do not cover the image")
    ends = np.cumsum(lengths)
    begin, end = (ends - lengths)[1::2], ends[1::2]  # the runs of ones
    begin, end = begin[end > begin], end[end > begin]
    first, last = y0 * width, y1 * width
    if (begin < first).any() or (end > last).any():
        raise ValueError(f"the mask has pixels outside its box {box}")
    edges = np.zeros(last - first + 1, np.int32)
    np.add.at(edges, begin - first, 1)
    np.add.at(edges, end - first, -1)
    crop = (np.cumsum(edges[:-1]) > 0).reshape(y1 - y0, width)[:, x0:x1]
    if int(np.count_nonzero(crop)) != int((end - begin).sum()):
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


def decode_instances(data: bytes, size: tuple[int, int]) -> dict[str, list[Instance]]:
    doc = json.loads(data)
    width, height = size
    if (doc.get("width"), doc.get("height")) != (width, height):
        raise ValueError("instances file is for another image size")
    return {
        name: [
            Instance.from_crop(int(e["id"]), float(e["score"]), tuple(e["bbox"]),
                               rle_decode_box(e["rle"], tuple(e["bbox"]), size), (height, width))
            for e in entries
        ]
        for name, entries in doc["concepts"].items()
    }

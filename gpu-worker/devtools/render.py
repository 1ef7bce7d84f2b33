"""What the rendered scenes (``devtools.scenes``, ``devtools.product_scene``) share: colour
transfer curves, a procedural noise field, ray-box intersection, sub-pixel coverage masks and the
camera's finish (tone curve and sensor noise)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 2


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def _lin(rgb: tuple[int, int, int]) -> np.ndarray:
    return srgb_to_linear(np.asarray(rgb, np.float32) / 255.0)


class NoiseField:
    """Smooth tileable value noise, sampled at arbitrary (u, v) with bilinear interpolation."""

    def __init__(self, rng: np.random.Generator, size: int = 256, smooth: float = 2.0) -> None:
        grid = rng.standard_normal((size, size)).astype(np.float32)
        # blur a 3 x 3 tiling and keep the centre so that the field wraps seamlessly
        grid = cv2.GaussianBlur(np.tile(grid, (3, 3)), (0, 0), smooth)[size:2 * size, size:2 * size]
        self.grid = grid / grid.std()
        self.size = size

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mu = np.mod(u, self.size).astype(np.float32)
        mv = np.mod(v, self.size).astype(np.float32)
        flat_u, flat_v = mu.reshape(1, -1), mv.reshape(1, -1)
        out = np.empty(flat_u.shape, np.float32)
        # cv2.remap caps the map width at 32767, so sample in chunks
        step = 32000
        for i in range(0, flat_u.shape[1], step):
            out[:, i:i + step] = cv2.remap(self.grid, flat_u[:, i:i + step], flat_v[:, i:i + step],
                                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return out.reshape(u.shape)

    def fbm(self, u: np.ndarray, v: np.ndarray, octaves: int = 4) -> np.ndarray:
        total = np.zeros(np.shape(u), np.float32)
        amp, norm = 1.0, 0.0
        for o in range(octaves):
            total += amp * self(u * 2**o + 17.3 * o, v * 2**o + 31.7 * o)
            norm += amp**2
            amp *= 0.5
        return total / np.sqrt(norm)


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    label: int
    colour: tuple[int, int, int]
    grain: float  # amplitude of the surface's fine texture


def _ray_box(ox, oy, oz, dx, dy, dz, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Entry distance along each ray (inf where missed) and the hit face's axis (0, 1, 2)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tn = np.full(np.shape(dx), -np.inf, np.float32)
        tf = np.full(np.shape(dx), np.inf, np.float32)
        axis = np.zeros(np.shape(dx), np.int8)
        for a, (o, d) in enumerate(((ox, dx), (oy, dy), (oz, dz))):
            inv = 1.0 / d
            t1 = (box.lo[a] - o) * inv
            t2 = (box.hi[a] - o) * inv
            near = np.minimum(t1, t2)
            far = np.maximum(t1, t2)
            # a ray parallel to the slab misses unless it lies inside it
            near = np.where(np.isnan(near), -np.inf, near)
            far = np.where(np.isnan(far), np.inf, far)
            axis = np.where(near > tn, a, axis).astype(np.int8)
            tn = np.maximum(tn, near)
            tf = np.minimum(tf, far)
    hit = (tn <= tf) & (tn > 1e-4)
    return np.where(hit, tn, np.inf).astype(np.float32), axis


def _coverage_masks(labels: np.ndarray, groups: dict[str, tuple[int, ...]], ss: int) -> dict[str, np.ndarray]:
    h, w = labels.shape[0] // ss, labels.shape[1] // ss
    masks = {}
    for name, members in groups.items():
        inside = np.isin(labels, members).reshape(h, ss, w, ss)
        masks[name] = inside.sum(axis=(1, 3)) * 2 >= ss * ss
    return masks


def _finish(radiance: np.ndarray, ss: int, rng: np.random.Generator, exposure_ref: float) -> np.ndarray:
    """Filmic tone curve, sRGB, box-filter the sub-pixels, then sensor noise and quantisation."""
    k = 0.55 / max(exposure_ref, 1e-6)
    toned = 1.0 - np.exp(-k * radiance)
    srgb = linear_to_srgb(toned)
    h, w = srgb.shape[0] // ss, srgb.shape[1] // ss
    img = srgb.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    # shot noise grows with signal, read noise does not; a little chroma noise as in real sensors
    sigma = (0.8 + 2.2 * np.sqrt(img.mean(axis=2, keepdims=True))) / 255.0
    lum_noise = rng.standard_normal((h, w, 1)).astype(np.float32)
    chroma_noise = rng.standard_normal((h, w, 3)).astype(np.float32) * 0.35
    img = img + sigma * (lum_noise + chroma_noise)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)



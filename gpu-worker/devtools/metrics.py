"""Image-quality measures for the edits, in numpy: CIEDE2000, SSIM, texture energy.

Used by the quality tests (tests/test_applier_quality.py), the report script and the benchmark.
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.edits.colour import srgb_to_lab


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) between CIELAB arrays (..., 3).

    Follows Sharma, Wu and Dalal, "The CIEDE2000 Color-Difference Formula: Implementation Notes,
    Supplementary Test Data, and Mathematical Observations" (2005), whose test pairs the tests use.
    """
    lab1 = np.asarray(lab1, np.float64)
    lab2 = np.asarray(lab2, np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    c_bar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, h1p)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, h2p)

    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_bar = (l1 + l2) / 2
    c_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(
        c1p * c2p == 0, h_sum,
        np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2)),
    )
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar7 = c_bar**7
    r_c = 2 * np.sqrt(c_bar7 / (c_bar7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar
    s_h = 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dc / s_c) * (dH / s_h))


def mean_colour_error(image: np.ndarray, region: np.ndarray, target_rgb: tuple[int, int, int]) -> dict[str, float]:
    """CIEDE2000 of a region's mean colour to the target, two ways: the Lab of the mean sRGB
    colour, and the mean of the pixels' Lab values."""
    pixels = image[region].astype(np.float64)
    target = srgb_to_lab(np.asarray(target_rgb, np.float64))
    of_mean_rgb = float(ciede2000(srgb_to_lab(pixels.mean(axis=0)), target))
    of_mean_lab = float(ciede2000(srgb_to_lab(pixels).mean(axis=0), target))
    return {"de_mean_rgb": of_mean_rgb, "de_mean_lab": of_mean_lab}


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float = 1.5) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004) with an 11 x 11 Gaussian window, float64 single channel."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (11, 11), sigma, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def region_lightness(image: np.ndarray) -> np.ndarray:
    return srgb_to_lab(image)[..., 0]


def normalised_lightness_ssim(before: np.ndarray, after: np.ndarray, region: np.ndarray) -> float:
    """SSIM of L* inside a region after normalising each image's region to [0, 1].

    Normalising (robust min-max: the 1st and 99th percentiles map to 0 and 1) takes out the
    intended change, the region's lightness level and range moving toward the target, and leaves
    what must survive: the pattern of shading and texture. Both the normalisation and the SSIM
    average use the region's inside only (3 px in for the statistics, and windows wholly inside
    for the average): the soft edge holds mixtures with the neighbours, which is what the edge
    tests measure, not the surface's structure.
    """
    inside = cv2.erode(region.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    inner = cv2.erode(region.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    if inner.sum() < 100:
        inside = inner = region

    def normalised(img: np.ndarray) -> np.ndarray:
        l = region_lightness(img)
        lo, hi = np.percentile(l[inside], [1, 99])
        return np.where(region, np.clip((l - lo) / max(hi - lo, 1e-6), 0, 1), 0.0)

    smap = ssim_map(normalised(before), normalised(after), data_range=1.0)
    return float(smap[inner].mean())


def texture_energy(image: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image over a region (fine detail: grain, noise, edges)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    return float(lap[region].mean())


def local_std(image: np.ndarray, region: np.ndarray, radius: int = 3) -> float:
    """Mean local standard deviation of the grey image over a region (texture contrast)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.blur(grey, k)
    var = np.maximum(cv2.blur(grey * grey, k) - mean * mean, 0)
    return float(np.sqrt(var)[region].mean())


def fill_texture_ratio(image: np.ndarray, hole: np.ndarray, ring_px: int) -> dict[str, float]:
    """Texture in a filled hole relative to the ring of surroundings around it (1.0 = same)."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    ring = cv2.dilate(hole.astype(np.uint8), k).astype(bool) & ~hole
    inner = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    inner = inner if inner.sum() > 50 else hole
    return {
        "laplacian_ratio": texture_energy(image, inner) / max(texture_energy(image, ring), 1e-6),
        "local_std_ratio": local_std(image, inner) / max(local_std(image, ring), 1e-6),
    }


def border_contrast(rgb: np.ndarray, a: np.ndarray, b: np.ndarray, near: int = 3, radius: int = 6) -> np.ndarray:
    """How far apart two touching regions look along their shared border: at each pixel of ``a``
    next to ``b``, the CIEDE2000 between the mean colour of ``a``'s pixels and of ``b``'s pixels
    within ``near`` px of the border, averaged over a window of ``radius`` px along it (so the
    figure is the regions' colours, not one pixel's noise)."""
    to_a = cv2.distanceTransform((~a).astype(np.uint8), cv2.DIST_L2, 5)
    to_b = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, 5)
    side_a, side_b = a & (to_b <= near), b & (to_a <= near)
    lab = srgb_to_lab(rgb.astype(np.float64)).astype(np.float32)
    size = (2 * radius + 1, 2 * radius + 1)

    def window_mean(where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        weight = cv2.boxFilter(where.astype(np.float32), -1, size, normalize=False)
        total = cv2.boxFilter(lab * where[..., None], -1, size, normalize=False)
        return total / np.maximum(weight, 1e-6)[..., None], weight > 0

    mean_a, have_a = window_mean(side_a)
    mean_b, have_b = window_mean(side_b)
    border = a & (to_b <= 1.5) & have_a & have_b
    return ciede2000(mean_a[border].astype(np.float64), mean_b[border].astype(np.float64))

"""Remove: fill a region from its surroundings, keeping their texture.

``PatchInpainter`` is exemplar-based inpainting after Criminisi, Perez and Toyama ("Region
Filling and Object Removal by Exemplar-Based Image Inpainting", 2004), sized for a CPU:

1. The hole's window (the hole plus a margin of surroundings to copy from) is filled at a reduced
   resolution (long side ``work_side``). The fill front advances patch by patch; the next patch is
   the one with the highest priority, confidence (how much of it is known, and how reliably) times
   data (how strongly an edge runs into the hole there), so straight structures such as
   baseboards, plank joints and door edges are continued before flat areas are filled in.
2. Each patch copies the missing pixels of the best-matching fully known patch nearby (masked SSD
   through ``cv2.matchTemplate``, with a small penalty on distance, so texture scale and lighting
   come from close by). What is copied is real texture, with its grain and noise.
3. The copies are made to meet without a step: the hole is solved again at the work resolution
   for the differences between neighbours that their sources show (in the gradient domain, as in
   Perez, Gangnet and Blake, "Poisson Image Editing", 2003), so patches copied from a little
   brighter or darker spots no longer show as blocks.
4. At full resolution every hole pixel takes that fill's low frequencies, and its detail from the
   original pixel its patch's source points to (that pixel less the fill's low frequencies
   there). Copies are what keep the fill as crisp as its surroundings, where a diffusion fill
   (``cv2.inpaint``, ``DiffusionInpainter`` here) smears them away.

The patch search is discrete: a pixel a level apart can pick another patch. It runs on
``guide``, the window as it was before this photo's edits (the decoded photo, the same bytes on
the host and on a device), while the values copied come from ``rgb``; so a recolor before a
remove, which the numpy and torch paths may leave a level apart, cannot move the fill's
sources. ``Inpainter`` is also the slot for a learned model (engine/edits/learned.py).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np


class Inpainter(Protocol):
    name: str

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        """``rgb`` uint8 H x W x 3, ``hole`` bool H x W -> uint8 H x W x 3; only hole pixels may
        differ. Discrete choices (which source, which orientation) are made on ``guide`` (uint8
        H x W x 3; None: ``rgb``)."""
        ...


class PatchInpainter:
    name = "patch"

    def __init__(self, work_side: int = 256, patch: int = 9, search: int = 64, distance_weight: float = 2e-5,
                 guess_weight: float = 0.5, seam_iterations: int = 300) -> None:
        self.work_side = work_side
        self.guess_weight = guess_weight  # a mask value: OpenCV weighs squared differences by its square
        self.r = patch // 2
        self.search = search
        self.distance_weight = distance_weight
        self.seam_iterations = seam_iterations

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        if not hole.any():
            return rgb.copy()
        if hole.all():  # nothing to copy from
            return np.broadcast_to(rgb.reshape(-1, 3).mean(axis=0).astype(np.uint8), rgb.shape).copy()
        img = rgb.astype(np.float32) / 255.0
        work, work_hole = self.reduce(img, hole)
        if guide is None or guide is rgb or np.array_equal(guide, rgb):
            filled, off_y, off_x, shift = self._fill(work, work_hole)
        else:
            _, off_y, off_x, shift = self._fill(self.reduce(guide.astype(np.float32) / 255.0, hole)[0],
                                                       work_hole)
            filled = self.render(work, work_hole, off_y, off_x, shift)
        filled = self.seamless(work, work_hole, filled, off_y, off_x)
        return self._synthesise(rgb, img, hole, filled, work_hole, off_y, off_x)

    def seamless(self, work: np.ndarray, work_hole: np.ndarray, filled: np.ndarray, off_y: np.ndarray,
                 off_x: np.ndarray) -> np.ndarray:
        """``filled`` without the brightness steps between neighbouring copies: the hole is solved
        again, in least squares with the known pixels fixed, for the differences between
        neighbours that the sources show (where two neighbours copy from different sources, the
        mean of what the two show there; across the hole's rim, what the source shows). Each
        copy keeps its texture; the blocks of slightly different brightness, a patch each, go.
        ``work`` is the window the sources are read in."""
        hole = work_hole
        ys, xs = np.nonzero(hole)
        if ys.size == 0 or not (off_y[ys, xs].any() or off_x[ys, xs].any()):
            return filled
        full_h, full_w = hole.shape
        known = ~hole
        src = work.astype(np.float64)
        moved = hole & ((off_y != 0) | (off_x != 0))
        # the system holds the hole's pixels and their neighbours only
        y0, y1 = max(0, int(ys.min()) - 1), min(full_h, int(ys.max()) + 2)
        x0, x1 = max(0, int(xs.min()) - 1), min(full_w, int(xs.max()) + 2)
        box = (slice(y0, y1), slice(x0, x1))
        inside, f = hole[box], filled[box].astype(np.float64)
        hp, wp = inside.shape

        def guidance(dy: int, dx: int) -> np.ndarray:
            """p - q for every p of the box and its neighbour q = p + (dy, dx), as the sources show it."""
            py, px = np.mgrid[y0 : y1 - dy, x0 : x1 - dx]
            total = np.zeros((hp - dy, wp - dx, 3), np.float64)
            count = np.zeros((hp - dy, wp - dx), np.float64)
            for ay, ax in ((py, px), (py + dy, px + dx)):  # the source of p, then that of q
                oy, ox = off_y[ay, ax], off_x[ay, ax]
                sy, sx = py + oy, px + ox  # where p's counterpart lies; q's is one step on
                ok = moved[ay, ax] & (sy >= 0) & (sx >= 0) & (sy + dy < full_h) & (sx + dx < full_w)
                cy, cx = np.where(ok, sy, 0), np.where(ok, sx, 0)
                ok &= known[cy, cx] & known[cy + dy, cx + dx]
                total += np.where(ok[..., None], src[cy, cx] - src[cy + dy, cx + dx], 0.0)
                count += ok
            own = f[: hp - dy, : wp - dx] - f[dy:, dx:]
            return np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], own)

        across, down = guidance(0, 1), guidance(1, 0)
        rhs = np.zeros((hp, wp, 3), np.float64)
        rhs[:, :-1] += across
        rhs[:, 1:] -= across
        rhs[:-1] += down
        rhs[1:] -= down
        # a neighbour's pair counts where it lies in the window (the box's edge is the window's, or known)
        degree = np.zeros((hp, wp), np.float64)
        degree[:, :-1] += 1
        degree[:, 1:] += 1
        degree[:-1] += 1
        degree[1:] += 1

        def neighbours(x: np.ndarray) -> np.ndarray:
            out = np.zeros_like(x)
            out[:, :-1] += x[:, 1:]
            out[:, 1:] += x[:, :-1]
            out[:-1] += x[1:]
            out[1:] += x[:-1]
            return out

        mask = inside[..., None]
        rhs += neighbours(np.where(mask, 0.0, f))
        inverse = np.where(inside, 1.0 / degree, 0.0)[..., None]

        def apply(x: np.ndarray) -> np.ndarray:  # degree x - its unknown neighbours, on the hole
            return np.where(mask, degree[..., None] * x - neighbours(x), 0.0)

        x = np.where(mask, f, 0.0)
        r = np.where(mask, rhs, 0.0) - apply(x)
        z = r * inverse
        d = z
        rz = (r * z).sum(axis=(0, 1))
        for _ in range(self.seam_iterations):  # conjugate gradients (Jacobi preconditioned), per channel
            if np.abs(r).max() < 1e-5:  # a tenth of a percent of a level at every pixel
                break
            ad = apply(d)
            step = rz / np.maximum((d * ad).sum(axis=(0, 1)), 1e-300)
            x = x + step * d
            r = r - step * ad
            z = r * inverse
            rz_next = (r * z).sum(axis=(0, 1))
            d = z + rz_next / np.maximum(rz, 1e-300) * d
            rz = rz_next
        out = filled.copy()
        out[ys, xs] = x[ys - y0, xs - x0].astype(np.float32)
        return out

    @staticmethod
    def render(work: np.ndarray, work_hole: np.ndarray, off_y: np.ndarray, off_x: np.ndarray,
               shift: np.ndarray) -> np.ndarray:
        """``_fill``'s result for the sources it chose, read in another image of the window:
        every hole pixel is its source's pixel plus the shift (sources were known from the
        start). Without sources (all offsets 0), the smooth fill ``_fill`` falls back to."""
        ys, xs = np.nonzero(work_hole)
        dy, dx = off_y[ys, xs], off_x[ys, xs]
        if not (dy.any() or dx.any()):
            telea = cv2.inpaint((work * 255 + 0.5).astype(np.uint8), work_hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            return telea.astype(np.float32) / 255
        filled = work.copy()
        filled[ys, xs] = work[ys + dy, xs + dx] + shift[ys, xs, None]
        return filled

    def reduce(self, img: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window (float32 0..1) and its hole at the work resolution (unchanged when the
        window is no larger). The search that follows is discrete: another path that wants the
        same fill must start from these very values."""
        h, w = hole.shape
        scale = max(1.0, max(h, w) / self.work_side)
        size = (max(1, round(w / scale)), max(1, round(h / scale)))
        if size == (w, h):
            return img, hole
        return (cv2.resize(img, size, interpolation=cv2.INTER_AREA),
                cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0)

    def _fill(self, img: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Exemplar fill at work resolution: the filled image, each pixel's source offset and brightness shift."""
        r = self.r
        side = 2 * r + 1
        # pad by r so that every patch centred in the image is addressable; the pad is neither
        # known (never matched, never a source) nor unknown (never filled)
        image = cv2.copyMakeBorder(img, r, r, r, r, cv2.BORDER_REFLECT)
        inside = np.zeros(image.shape[:2], bool)
        inside[r:-r, r:-r] = True
        unknown = np.zeros_like(inside)
        unknown[r:-r, r:-r] = hole
        known = inside & ~unknown
        source_ok = cv2.erode(known.astype(np.uint8), np.ones((side, side), np.uint8),
                              borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        if not source_ok.any():
            telea = cv2.inpaint((img * 255 + 0.5).astype(np.uint8), hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            zeros = np.zeros(hole.shape, np.int32)
            return telea.astype(np.float32) / 255, zeros, zeros, np.zeros(hole.shape, np.float32)
        # edges that run into the hole are read from a smooth first guess of it
        guess8 = cv2.inpaint((image * 255 + 0.5).astype(np.uint8), unknown.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        guess = guess8.astype(np.float32) / 255.0
        guide = cv2.cvtColor(guess8, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        confidence = known.astype(np.float32)
        off_y = np.zeros(inside.shape, np.int32)
        off_x = np.zeros(inside.shape, np.int32)
        offset_level = np.zeros(inside.shape, np.float32)
        priority = np.full(inside.shape, -np.inf, np.float32)
        hp, wp = inside.shape

        def refresh(y0: int, y1: int, x0: int, x1: int) -> None:
            """Recompute front and priorities in rows y0:y1, columns x0:x1 (with filter margins)."""
            y0, y1, x0, x1 = max(0, y0), min(hp, y1), max(0, x0), min(wp, x1)
            m = side + 2
            ya, yb, xa, xb = max(0, y0 - m), min(hp, y1 + m), max(0, x0 - m), min(wp, x1 + m)
            kn = known[ya:yb, xa:xb]
            un = unknown[ya:yb, xa:xb]
            front = un & cv2.dilate(kn.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            conf = cv2.boxFilter(confidence[ya:yb, xa:xb], -1, (side, side), normalize=True,
                                 borderType=cv2.BORDER_CONSTANT)
            kf = cv2.GaussianBlur(kn.astype(np.float32), (0, 0), 1.0)
            ny, nx = cv2.Sobel(kf, cv2.CV_32F, 0, 1), cv2.Sobel(kf, cv2.CV_32F, 1, 0)
            norm = np.sqrt(nx * nx + ny * ny) + 1e-6
            g = guide[ya:yb, xa:xb]
            gy, gx = cv2.Sobel(g, cv2.CV_32F, 0, 1) / 8, cv2.Sobel(g, cv2.CV_32F, 1, 0) / 8
            data = np.abs(-gy * nx + gx * ny) / norm  # isophote (perpendicular to the gradient) . normal
            local = np.where(front, conf * (data + 0.01), -np.inf)
            sy, sx = slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)
            priority[y0:y1, x0:x1] = local[sy, sx]

        refresh(0, hp, 0, wp)
        while True:
            flat = int(np.argmax(priority))
            if not np.isfinite(priority.flat[flat]):
                break
            py, px = divmod(flat, wp)
            patch = (slice(py - r, py + r + 1), slice(px - r, px + r + 1))
            # Known pixels are matched; the missing ones are compared, at a low weight, with the
            # smooth first guess, so a source whose missing part is a different material (a
            # baseboard above a floor patch) loses even when its known part fits.
            mask = known[patch][..., None]
            template = np.where(mask, image[patch], guess[patch])
            tmask = np.broadcast_to(np.where(mask, 1.0, self.guess_weight), template.shape).astype(np.float32)
            qy, qx, shift = self._best_source(image, template, tmask, source_ok, py, px)
            new = unknown[patch].copy()
            src = (slice(qy - r, qy + r + 1), slice(qx - r, qx + r + 1))
            image[patch][new] = image[src][new] + shift
            guide[patch][new] = image[patch][new] @ np.array([0.299, 0.587, 0.114], np.float32)
            off_y[patch][new], off_x[patch][new] = qy - py, qx - px
            offset_level[patch][new] = shift
            confidence[patch][new] = float(confidence[patch].sum()) / (side * side)
            unknown[patch] &= ~new
            known[patch] |= new
            refresh(py - r - 1, py + r + 2, px - r - 1, px + r + 2)
        crop = (slice(r, -r), slice(r, -r))
        return image[crop], off_y[crop], off_x[crop], offset_level[crop]

    def _best_source(self, image: np.ndarray, template: np.ndarray, tmask: np.ndarray, source_ok: np.ndarray,
                     py: int, px: int) -> tuple[int, int, float]:
        """Centre of the best source patch, and the brightness shift to apply to what it copies.

        Patches are compared up to a brightness shift, half of which is forgiven: light falls
        off across a wall, and the best texture for a spot often sits where it is a little
        brighter or darker. The shift is then added to the copy so that it meets its new
        surroundings without a step.
        """
        r = self.r
        hp, wp = source_ok.shape
        weight = tmask * tmask  # OpenCV weighs squared differences by the mask's square
        w_total = float(weight.sum())
        wt_sum = float((weight * template).sum())
        for reach in (self.search, max(hp, wp)):  # local first; the whole window if nothing local fits
            y0, y1 = max(0, py - reach - r), min(hp, py + reach + r + 1)
            x0, x1 = max(0, px - reach - r), min(wp, px + reach + r + 1)
            ok = source_ok[y0 + r:y1 - r, x0 + r:x1 - r]
            if not ok.any():
                continue
            area = image[y0:y1, x0:x1]
            ssd = cv2.matchTemplate(area, template, cv2.TM_SQDIFF, mask=tmask)
            ws_sum = cv2.matchTemplate(area, weight, cv2.TM_CCORR)
            diff = wt_sum - ws_sum  # weighted sum of template minus source
            ssd = ssd - diff * diff / (2.0 * w_total)
            cy = np.arange(y0 + r, y1 - r)[:, None] - py
            cx = np.arange(x0 + r, x1 - r)[None, :] - px
            cost = np.where(ok, ssd + self.distance_weight * (cy * cy + cx * cx), np.inf)
            i = int(np.argmin(cost))
            iy, ix = divmod(i, cost.shape[1])
            shift = float(diff[iy, ix]) / (2.0 * w_total)
            return y0 + r + iy, x0 + r + ix, shift
        raise AssertionError("source_ok is not empty, so some reach finds a source")

    @staticmethod
    def _synthesise(rgb: np.ndarray, img: np.ndarray, hole: np.ndarray, filled: np.ndarray, work_hole: np.ndarray,
                    off_y: np.ndarray, off_x: np.ndarray) -> np.ndarray:
        """Full resolution: each hole pixel takes its low frequencies from the work-resolution fill
        and its detail from the original pixel its work pixel's source points to (that pixel
        less the same fill's low frequencies there). Copies from neighbouring sources then meet
        without a step, however their brightness differs.

        Only the hole's pixels are computed (32-bit indices, work-resolution images sampled at those
        pixels): a 12 MP hole would otherwise take several full-frame float copies at once."""
        h, w = hole.shape
        eh, ew = filled.shape[:2]
        qy, qx = (q.astype(np.int32) for q in np.nonzero(hole))
        if (eh, ew) == (h, w):  # the fill is the copies themselves
            out = rgb.copy()
            out[qy, qx] = np.clip(filled[qy, qx] * 255 + 0.5, 0, 255).astype(np.uint8)
            return out
        cy = np.minimum(qy * eh // h, eh - 1)
        cx = np.minimum(qx * ew // w, ew - 1)
        sy = qy + np.round(off_y[cy, cx] * (h / eh)).astype(np.int32)
        sx = qx + np.round(off_x[cy, cx] * (w / ew)).astype(np.int32)
        ok = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        ok[ok] &= ~hole[sy[ok], sx[ok]]
        ok &= work_hole[cy, cx]
        values = sample_bilinear(filled, qy, qx, (h, w))
        sy, sx = sy[ok], sx[ok]
        values[ok] += img[sy, sx] - sample_bilinear(filled, sy, sx, (h, w))
        out = rgb.copy()
        out[qy, qx] = np.clip(values * 255 + 0.5, 0, 255).astype(np.uint8)
        return out


def sample_bilinear(small: np.ndarray, qy: np.ndarray, qx: np.ndarray, full: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(small, full, INTER_LINEAR)[qy, qx]`` without the full-size image: ``small``
    (h x w x 3 float32) sampled at the full-resolution pixels (qy, qx) as (N, 3) float32."""
    (h, w), (eh, ew) = full, small.shape[:2]
    out = np.empty((len(qy), 3), np.float32)
    row, block = 4096, 1 << 20  # cv2.remap takes maps under 32767 on a side: blocks of 256 x 4096 points
    for at in range(0, len(qy), block):
        ys, xs = qy[at : at + block], qx[at : at + block]
        pad = -len(ys) % row
        map_y = np.pad((ys + 0.5) * (eh / h) - 0.5, (0, pad)).astype(np.float32).reshape(-1, row)
        map_x = np.pad((xs + 0.5) * (ew / w) - 0.5, (0, pad)).astype(np.float32).reshape(-1, row)
        sampled = cv2.remap(small, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[at : at + len(ys)] = sampled.reshape(-1, 3)[: len(ys)]
    return out


class DiffusionInpainter:
    """Plain ``cv2.inpaint`` (Telea): the baseline the patch fill is measured against."""

    name = "cv2-telea"

    def __init__(self, radius: int = 5) -> None:
        self.radius = radius

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        return cv2.inpaint(rgb, hole.astype(np.uint8), self.radius, cv2.INPAINT_TELEA)


def remove(rgb: np.ndarray, alpha: np.ndarray, inpainter: Inpainter, guide: np.ndarray | None = None,
           filled: np.ndarray | None = None) -> np.ndarray:
    """Filled sRGB (0..255 float32) for each pixel of the window where ``alpha > 0``.

    ``filled`` (pixels an earlier remove made up) is filled again with the hole and then left as
    it was: on ``guide`` it still shows the object removed there, so it must not be a source."""
    hole = alpha > 0
    unknown = hole if filled is None else hole | filled
    return inpainter.inpaint(rgb, unknown, guide)[hole].astype(np.float32)

"""Remove at 1:1: the floor lamp removed from a rendered room, judged on crops against the room
rendered without it.

    python -m scripts.remove_crops                  # from gpu-worker/; 1600 x 1200
    python -m scripts.remove_crops --width 1200     # quicker

Writes bench/results/remove_crops.md (per crop: CIEDE2000 against the truth, line continuity)
and bench/results/remove_crops.png (each crop at 2x, nearest neighbour: input, patch fill,
structure fill, truth). The crops are where the lamp hides structure:

- wall seam: the pole in front of the wall corner (the lamp's wall pixels between shade and base);
- baseboard: the baseboard behind the pole's foot;
- planks: the floor under the lamp's base.

CIEDE2000 is the mean over the crop's hidden pixels of both images blurred by 1.5 px (texture
grain is random, so only its level can match). Line continuity is the correlation, over the same
pixels, of the band-pass lightness (blur 1 px minus blur 4 px) of fill and truth: 1 when every
line and edge runs where the truth has it, 0 when the fill's lines have nothing to do with it.
Seam line: the crop's columns each averaged in lightness (L*) over its hidden rows; the largest
gap between a column and the mean of its two neighbours (a line along a pole shows as one
column apart; the truth's own figure is the scene's texture).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from devtools.metrics import ciede2000
from devtools.scenes import render_room
from engine.actions.remove import Remove
from engine.applier import Edit, apply_edits_with
from engine.edits import colour
from engine.edits.remove import PatchInpainter
from engine.edits.structure_fill import StructureInpainter
from engine.segmenter import instances_from_union

PACKAGE = Path(__file__).resolve().parent.parent


def crop_regions(hole: np.ndarray, truth_masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The hidden pixels of each crop, from the masks of the room without the lamp."""
    widths = hole.sum(axis=1)
    pole_rows = (widths > 0) & (widths < 0.25 * widths.max())
    regions = {
        "wall seam": hole & truth_masks["Wall"] & pole_rows[:, None],
        "baseboard": hole & truth_masks["Frame_Molding"],
        "planks": hole & truth_masks["Floor"],
    }
    return {name: region for name, region in regions.items() if region.sum() >= 20}


def measure(out: np.ndarray, truth: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(mean CIEDE2000 after a 1.5 px blur, line continuity) over ``region``."""
    blur = lambda a, s: cv2.GaussianBlur(a.astype(np.float32), (0, 0), s)  # noqa: E731
    de = ciede2000(colour.srgb_to_lab(blur(out, 1.5)[region]), colour.srgb_to_lab(blur(truth, 1.5)[region]))
    lightness = lambda a: colour.lstar(colour.luminance(colour.to_linear(a)))  # noqa: E731
    band = lambda a: blur(lightness(a), 1.0) - blur(lightness(a), 4.0)  # noqa: E731
    x, y = band(out)[region], band(truth)[region]
    continuity = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    return float(de.mean()), continuity


SURFACES = {"wall seam": "Wall", "baseboard": "Frame_Molding", "planks": "Floor"}


def lit_beside(rgb: np.ndarray, truth: np.ndarray, hole: np.ndarray, region: np.ndarray,
               surface: np.ndarray) -> float:
    """Mean level (0..255) of the photo less the truth on the known pixels of the region's surface
    within 12 px either side of it, in its rows: light or shadow the object cast, which the
    truth lacks and a fill that matches its surroundings carries."""
    near = cv2.dilate(region.astype(np.uint8), np.ones((1, 25), np.uint8)).astype(bool)
    beside = near & ~hole & surface & region.any(axis=1)[:, None]
    return float((rgb[beside].astype(np.float32) - truth[beside]).mean()) if beside.any() else 0.0


def seam_line(out: np.ndarray, region: np.ndarray) -> float:
    """Largest |column - mean of its two neighbours| of the lightness averaged over the region's
    rows, over its columns and three either side."""
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    c0, c1 = max(0, cols[0] - 3), min(out.shape[1], cols[-1] + 4)
    lightness = colour.lstar(colour.luminance(colour.to_linear(out[rows, c0:c1])))
    profile = lightness.mean(axis=0)
    return float(np.abs(profile[1:-1] - 0.5 * (profile[:-2] + profile[2:])).max())


def box(region: np.ndarray, pad: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return (slice(max(0, rows[0] - pad), min(shape[0], rows[-1] + pad + 1)),
            slice(max(0, cols[0] - pad), min(shape[1], cols[-1] + pad + 1)))


def contact_sheet(images: list[np.ndarray], crops: list[tuple[slice, slice]], zoom: int = 2) -> np.ndarray:
    rows = []
    for crop in crops:
        tiles = [cv2.resize(img[crop], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) for img in images]
        height = max(t.shape[0] for t in tiles)
        tiles = [cv2.copyMakeBorder(t, 0, height - t.shape[0], 0, 6, cv2.BORDER_CONSTANT, value=(255, 255, 255))
                 for t in tiles]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 6, 0, width - r.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
            for r in rows]
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=PACKAGE / "bench" / "results" / "remove_crops.md")
    args = parser.parse_args()
    width, height = args.width, args.width * 3 // 4

    rgb, masks = render_room(width, height, seed=args.seed)
    truth, truth_masks = render_room(width, height, seed=args.seed, furniture=False)
    lamp = min(instances_from_union(masks["Furniture"], multi_instance=True), key=lambda i: i.area).mask
    fills, seconds = {}, {}
    for name, inpainter in (("patch fill", PatchInpainter()), ("structure fill", StructureInpainter())):
        seconds[name] = float("inf")
        for _ in range(2):  # best of two: the first call also pays one-time costs
            start = time.perf_counter()
            fills[name] = apply_edits_with(rgb, [Edit(Remove(), lamp)], None, inpainter=inpainter)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    # the hidden pixels: what the lamp covered, grown as remove grows it
    hole = np.any([fill != rgb for fill in fills.values()], axis=(0, 3)) | lamp
    regions = crop_regions(hole, truth_masks)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    lines = [
        "# Remove at 1:1: the floor lamp, on crops",
        "",
        f"Room `devtools.scenes.render_room({width}, {height}, seed={args.seed})`, the lamp (the smallest "
        "furniture instance) removed through `apply_edits_with`, compared with the same room rendered "
        "without furniture. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores (shared); {dt.date.today().isoformat()}; commit {commit}.",
        "",
        "CIEDE2000: mean over the crop's hidden pixels, both images blurred by 1.5 px (lower is better). "
        "Line continuity: correlation of band-pass lightness with the truth (higher is better). "
        "Seam line: the largest step, in L*, of a column's mean lightness over the crop's hidden rows from "
        "its two neighbours' (a line along the pole; the truth's own is the texture's level). "
        "Lit beside: the photo less the truth, in 8-bit levels, on the known pixels of the same surface "
        "beside the crop (light or shadow the lamp casts, which the truth lacks; a fill that matches its "
        "surroundings carries it).",
        "",
        "| crop | pixels | CIEDE2000 patch | CIEDE2000 structure | continuity patch | continuity structure "
        "| seam line patch | seam line structure | seam line truth | lit beside |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, region in regions.items():
        (de_p, c_p), (de_s, c_s) = (measure(fills[f], truth, region) for f in ("patch fill", "structure fill"))
        s_p, s_s, s_t = (seam_line(image, region) for image in (fills["patch fill"], fills["structure fill"], truth))
        lit = lit_beside(rgb, truth, hole, region, truth_masks[SURFACES[name]])
        lines.append(f"| {name} | {int(region.sum())} | {de_p:.2f} | {de_s:.2f} | {c_p:.2f} | {c_s:.2f} "
                     f"| {s_p:.2f} | {s_s:.2f} | {s_t:.2f} | {lit:+.1f} |")
        print(f"{name:10s} CIEDE2000 {de_p:.2f} -> {de_s:.2f}   continuity {c_p:.2f} -> {c_s:.2f}   "
              f"seam line {s_p:.2f} -> {s_s:.2f} (truth {s_t:.2f})", flush=True)
    lines += [
        "",
        f"Time for the whole removal at this size (same run, same machine, best of 2): patch fill "
        f"{seconds['patch fill']:.2f} s, structure fill {seconds['structure fill']:.2f} s. The cost at 12 MP "
        "is in apply_remove_cpu.md (`python -m bench.bench_apply --only remove`).",
        "",
        "![crops](remove_crops.png)",
        "",
        "Crops at 2x, nearest neighbour; columns: input, patch fill, structure fill, truth; rows: "
        + ", ".join(regions) + ".",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    crops = [box(region, 20, rgb.shape) for region in regions.values()]
    sheet = contact_sheet([rgb, fills["patch fill"], fills["structure fill"], truth], crops)
    cv2.imwrite(str(args.out.with_suffix(".png")), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    for name, value in seconds.items():
        print(f"{name}: {value:.2f} s")
    print(f"wrote {args.out} and {args.out.with_suffix('.png').name}")


if __name__ == "__main__":
    main()

"""Before/after contact sheet and a table of quality metrics per scene and action.

    python -m scripts.quality_report        # from gpu-worker/

Writes bench/results/contact_sheet.png (one row per scene and action: before, after, and a third
tile: plain cv2.inpaint for removals, a 3x zoom on the region's border otherwise) and
bench/results/quality.md (the numbers, with the thresholds the quality tests hold them to), and
the same edits on segmenter-like masks, coarse against fitted (scripts/mask_quality.py, with
bench/results/outline_sheet.png), on the rooms the mask fit was tuned on and on others
(``--tuning-only`` skips those). ``--logit-masks`` also writes
bench/results/quality_logit_masks.md: the same edits on masks from devtools/logit_masks.py.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from devtools.metrics import ciede2000, fill_texture_ratio, mean_colour_error, normalised_lightness_ssim, texture_energy
from devtools.product_scene import render_product
from devtools.scenes import render_room
from engine.actions.recolor import Recolor
from engine.actions.remove import Remove
from engine.actions.tone import NAMED_TONES, Tone, ToneParams
from engine.applier import Edit, apply_edits_with, max_reach_px
from engine.edits import colour
from engine.edits.backend import NumpyBackend
from engine.edits.remove import DiffusionInpainter, PatchInpainter
from engine.segmenter import instances_from_union
from presets.interior import PRESET as INTERIOR
from presets.seller import PRESET as SELLER
from scripts import mask_quality

PACKAGE = Path(__file__).resolve().parent.parent

RESULTS = PACKAGE / "bench" / "results"
TILE = (400, 300)


@dataclass
class Case:
    scene: str
    label: str
    edit: Edit
    target: tuple[int, int, int] | None = None  # recolor target, for the colour error


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.48, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _tile(img: np.ndarray, text: str) -> np.ndarray:
    h, w = img.shape[:2]
    scale = min(TILE[0] / w, TILE[1] / h)
    small = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full((TILE[1], TILE[0], 3), 32, np.uint8)
    canvas[:small.shape[0], :small.shape[1]] = small
    return _label(canvas, text)


def _border_zoom(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A 3x nearest-neighbour zoom on a stretch of the region's border."""
    edge = region & ~cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(edge)
    if ys.size == 0:
        return img
    i = ys.size // 3
    ch, cw = TILE[1] // 3, TILE[0] // 3
    y0 = int(np.clip(ys[i] - ch // 2, 0, img.shape[0] - ch))
    x0 = int(np.clip(xs[i] - cw // 2, 0, img.shape[1] - cw))
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (cw * 3, ch * 3), interpolation=cv2.INTER_NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--tuning-only", action="store_true",
                        help="skip the segmenter-like rows on rooms and mask styles not used for tuning (faster)")
    parser.add_argument("--logit-masks", action="store_true",
                        help="also the edits on masks from devtools/logit_masks.py (slow)")
    args = parser.parse_args()
    w, h = args.width, args.height

    room, room_masks = render_room(w, h, seed=0)
    clean, _ = render_room(w, h, seed=0, furniture=False)
    room2, room2_masks = render_room(w, h, seed=7)
    product, product_masks = render_product(h, h, seed=1)
    scenes = {
        "room (seed 0)": (room, room_masks, ("Frame_Molding", "Glass_highlight", "Grout", "Door")),
        "room (seed 7)": (room2, room2_masks, ("Frame_Molding", "Glass_highlight", "Grout", "Door")),
        "product (seed 1)": (product, product_masks, ("Logo", "Text")),
    }
    truth = {"room (seed 0)": clean}
    furniture = sorted(instances_from_union(room_masks["Furniture"], True), key=lambda i: i.area)
    pal, spal = INTERIOR.palette, SELLER.palette

    def recolor(scene: str, concept: str, pid: str, palette=pal) -> Case:
        e = palette[pid]
        return Case(scene, f"{concept} -> {pid}", Edit(Recolor(e.rgb, e.material, e.spread), scenes[scene][1][concept]), e.rgb)

    cases = [
        recolor("room (seed 0)", "Wall", "sage"),
        recolor("room (seed 0)", "Wall", "navy"),
        recolor("room (seed 0)", "Wall", "offwhite_a"),
        recolor("room (seed 0)", "Floor", "walnut"),
        recolor("room (seed 0)", "Floor", "marble_white"),
        recolor("room (seed 0)", "Tile", "terracotta"),
        Case("room (seed 0)", "Ceiling tone bright", Edit(Tone(NAMED_TONES["bright"]), room_masks["Ceiling"])),
        Case("room (seed 0)", "Wall tone warm", Edit(Tone(NAMED_TONES["warm"]), room_masks["Wall"])),
        Case("room (seed 0)", "Floor tone cool+contrast", Edit(Tone(ToneParams(temperature=-0.6, contrast=0.4)), room_masks["Floor"])),
        Case("room (seed 0)", "remove lamp", Edit(Remove(), furniture[0].mask)),
        Case("room (seed 0)", "remove table", Edit(Remove(), furniture[1].mask)),
        Case("room (seed 0)", "remove sofa (crosses the frame)", Edit(Remove(), furniture[2].mask)),
        recolor("room (seed 7)", "Wall", "charcoal"),
        recolor("room (seed 7)", "Wall", "oak_a"),
        recolor("room (seed 7)", "Floor", "slate"),
        recolor("product (seed 1)", "Background", "pastel_blue", spal),
        recolor("product (seed 1)", "Background", "studio_white", spal),
        Case("product (seed 1)", "Product tone vivid", Edit(Tone(NAMED_TONES["vivid"]), product_masks["Product"])),
    ]

    rows, table = [], []
    for case in cases:
        img, masks, protect_names = scenes[case.scene]
        protect = np.zeros(img.shape[:2], bool)
        for name in protect_names:
            protect |= masks[name]
        region = case.edit.mask & ~protect
        start = time.perf_counter()
        out = apply_edits_with(img, [case.edit], protect, backend=NumpyBackend(), inpainter=PatchInpainter())
        seconds = time.perf_counter() - start
        moved = (out != img).any(axis=-1) & ~region
        dist = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        metrics = {
            "protect exact": bool(np.array_equal(out[protect], img[protect])),
            "outside change max px": float(dist[moved].max(initial=0)),
            "time s": seconds,
        }
        third = _tile(_border_zoom(out, region), "after, border x3")
        if case.target is not None:
            metrics.update(mean_colour_error(out, region, case.target))
            metrics["ssim L"] = normalised_lightness_ssim(img, out, region)
        elif isinstance(case.edit.op, Tone):
            metrics["ssim L"] = normalised_lightness_ssim(img, out, region)
            lab0 = colour.srgb_to_lab(img[region].astype(np.float64)).mean(axis=0)
            lab1 = colour.srgb_to_lab(out[region].astype(np.float64)).mean(axis=0)
            metrics["dL*, db*"] = f"{lab1[0] - lab0[0]:+.1f}, {lab1[2] - lab0[2]:+.1f}"
        else:
            hole = case.edit.mask
            telea = apply_edits_with(img, [case.edit], protect, inpainter=DiffusionInpainter())
            third = _tile(telea, "cv2.inpaint (Telea), same hole")
            inner = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            metrics["texture vs ring"] = fill_texture_ratio(out, hole, 12)["laplacian_ratio"]
            metrics["cv2.inpaint vs ring"] = fill_texture_ratio(telea, hole, 12)["laplacian_ratio"]
            if case.scene in truth:
                gt = truth[case.scene]
                metrics["texture vs truth"] = texture_energy(out, inner) / texture_energy(gt, inner)
                metrics["cv2.inpaint vs truth"] = texture_energy(telea, inner) / texture_energy(gt, inner)
                blur = lambda im: cv2.GaussianBlur(im.astype(np.float32), (0, 0), 6)  # noqa: E731
                metrics["low-freq dE vs truth"] = float(np.median(ciede2000(
                    colour.srgb_to_lab(blur(gt)[inner]), colour.srgb_to_lab(blur(out)[inner]))))
        rows.append(np.hstack([_tile(img, f"{case.scene}: before"), _tile(out, f"after: {case.label}"), third]))
        table.append((case, metrics))
        print(f"{case.scene:17s} {case.label:32s} " + "  ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    sheet = np.vstack(rows)
    cv2.imwrite(str(RESULTS / "contact_sheet.png"), sheet[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])

    def fmt(v: object) -> str:
        if isinstance(v, bool):
            return "yes" if v else "**NO**"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = [
        "# Edit quality on rendered scenes with exact masks",
        "",
        f"Scenes from `devtools/scenes.py` at {w}x{h} (product {h}x{h}); written by `python -m scripts.quality_report`; "
        "see `contact_sheet.png` for the pictures, in the same order. CPU (numpy back end), times include the matte.",
        "",
        "Thresholds held by tests/test_applier_quality.py: recolor mean colour CIEDE2000 <= 2.0 (both as Lab of "
        "the mean sRGB and as mean of Lab), normalised-L* SSIM >= 0.95 for flat paints (>= 0.8 for pure white), "
        f"protected pixels byte-identical, outside changes within {max_reach_px((h, w))} px here "
        "(3 px at 1 MP, scaled), remove texture energy 0.7-1.4x the true surface's and > 1.5x cv2.inpaint's.",
        "",
        "| scene | action | dE (mean sRGB) | dE (mean Lab) | SSIM L* | protect exact | outside max px | time s | other |",
        "| --- | --- | ---: | ---: | ---: | :---: | ---: | ---: | --- |",
    ]
    for case, m in table:
        other = ", ".join(f"{k} {fmt(v)}" for k, v in m.items()
                          if k not in ("de_mean_rgb", "de_mean_lab", "ssim L", "protect exact", "outside change max px", "time s"))
        lines.append(
            f"| {case.scene} | {case.label} | {fmt(m.get('de_mean_rgb', '-'))} | {fmt(m.get('de_mean_lab', '-'))} | "
            f"{fmt(m.get('ssim L', '-'))} | {fmt(m['protect exact'])} | {fmt(m['outside change max px'])} | "
            f"{fmt(m['time s'])} | {other} |")
    lines += [
        "",
        "Reading the remove rows: `texture vs truth` is the mean |Laplacian| inside the filled hole over that of the "
        "same pixels in the room rendered without the furniture (1.0 = as textured as the real floor/wall); "
        "`vs ring` compares with the 12 px ring around the hole; `low-freq dE vs truth` is the median CIEDE2000 "
        "between the fill and the truth after a 6 px blur (right colours and shading, not just right texture). "
        "Shadows the furniture cast are not part of its mask and stay, as they would with a segmenter's mask. "
        "The remove rows use the exemplar fill (`PatchInpainter`); the default, the structure fill, is measured "
        "at 1:1 on crops against the truth in `remove_crops.md`.",
        "",
    ]
    found = mask_quality.outcomes(w, h)
    device = mask_quality.measured_on()
    lines += mask_quality.section(found, device)
    if not args.tuning_only:
        lines += mask_quality.unseen_section(mask_quality.unseen_outcomes(w, h), device)
    lines += mask_quality.molding_evidence(w, h)
    mask_quality.write_sheet(found)
    (RESULTS / "quality.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {RESULTS / 'contact_sheet.png'} and {RESULTS / 'quality.md'}")
    if args.logit_masks:
        print("wrote", *mask_quality.write_logit_report(w, h))


if __name__ == "__main__":
    main()

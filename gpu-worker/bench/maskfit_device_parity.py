"""The mask fit in torch (engine/edits/device/maskfit.py) next to the host's (engine/maskfit.py).

    python -m bench.maskfit_device_parity            # from gpu-worker/; CUDA too where present

Four tables, written to bench/results/maskfit_device_parity_{cpu_<machine>,cuda}.md:

1. Pixels decided otherwise: every concept's segmenter-like mask (devtools/segmenter_like.py) on
   rendered rooms and a product scene, fitted by both; for each speck-block size the torch fit
   can use (``SPECK_BLOCK_CELLS``), since its speck labelling is the one step that differs by design.
2. Pixels decided otherwise at 12 MP (a rendered room scaled up, its large concepts' segmenter-like
   masks made at that size), where the host measures its sure sides and edge colours on blocks.
3. Outline quality (scripts/mask_quality.py's cases, devtools/outline_quality.py's figures) with
   the masks made ready on the host and by ``TorchEditor``'s fitter.
4. Cost of one mask over 65% of a 12 MP frame: host CPU and wall seconds of each fit (the torch
   fit twice, after a warm-up); on a GPU the torch fit's host CPU is its launches and waits.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import date
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch

from devtools.product_scene import render_product
from devtools.scenes import render_room
from devtools.segmenter_like import segmenter_like
from engine import maskfit as host
from engine.edits.device import maskfit as device_fit
from engine.edits.device.handover import DeviceFitter
from engine.plan_masks import fit_masks
from scripts.mask_quality import outcomes

RESULTS = Path(__file__).resolve().parent / "results"
ROOM_SEEDS = (0, 7, 3, 11)
BLOCKS = (0.25, 0.5, 1.0)


def scenes() -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    out = []
    for seed in ROOM_SEEDS:
        rgb, exact = render_room(960, 720, seed=seed)
        out.append((f"room {seed}", rgb, segmenter_like(exact, seed=21 + seed)))
    rgb, exact = render_product(720, 720, seed=1)
    out.append(("product 1", rgb, segmenter_like(exact, seed=21)))
    return out


def decided_otherwise(device: torch.device) -> list[str]:
    rows = ["| scene | masks | pixels the host fit changes | " + " | ".join(
        f"decided otherwise, block {b:g} cell" for b in BLOCKS) + " |", "|---|---:|---:|" + "---:|" * len(BLOCKS)]
    totals = np.zeros(len(BLOCKS))
    changed_total = 0
    for name, rgb, coarse in scenes():
        photo = torch.from_numpy(rgb).to(device)
        masks = {k: m for k, m in coarse.items() if m.any()}
        ours = {k: host.fit_mask(rgb, m) for k, m in masks.items()}
        changed = sum(int((ours[k] ^ m).sum()) for k, m in masks.items())
        diffs = []
        for block in BLOCKS:
            with mock.patch.object(device_fit, "SPECK_BLOCK_CELLS", block):
                theirs = {k: device_fit.fit_mask(photo, torch.from_numpy(m).to(device)).cpu().numpy()
                          for k, m in masks.items()}
            diffs.append(sum(int((ours[k] ^ theirs[k]).sum()) for k in masks))
        totals += diffs
        changed_total += changed
        rows.append(f"| {name} | {len(masks)} | {changed} | " + " | ".join(
            f"{d} ({d / max(changed, 1):.2%})" for d in diffs) + " |")
    rows.append(f"| all | | {changed_total} | " + " | ".join(
        f"{int(d)} ({d / max(changed_total, 1):.2%})" for d in totals) + " |")
    return rows


TWELVE_MP_CONCEPTS = ("Wall", "Floor", "Ceiling", "Door")


def decided_otherwise_12mp(device: torch.device) -> list[str]:
    """Host and torch fits of a 12 MP room's segmenter-like masks: with the torch fit's own speck
    labelling and with the host's speck cleaning patched in (the rest of the port alone)."""
    rgb, exact = render_room(1000, 750, seed=0)
    rgb = cv2.resize(rgb, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    exact = {k: cv2.resize(m.view(np.uint8), (4000, 3000), interpolation=cv2.INTER_NEAREST).astype(bool)
             for k, m in exact.items()}
    coarse = segmenter_like(exact, seed=21)
    photo = torch.from_numpy(rgb).to(device)

    def host_clean(mask: torch.Tensor, min_area: float, block: int) -> torch.Tensor:
        return torch.from_numpy(host.clean_specks(mask.cpu().numpy(), min_area)).to(mask.device)

    rows = ["| mask | share of the frame | pixels the host fit changes | decided otherwise | "
            "decided otherwise, host's speck cleaning | host fit of the photo cropped by 2 px |",
            "|---|---:|---:|---:|---:|---:|"]
    cell = host.prediction_cell_px(rgb.shape)
    for name in TWELVE_MP_CONCEPTS:
        mask = coarse[name]
        ours = host.fit_mask(rgb, mask)
        # the host's own sensitivity to its tile grid: the same fit 2 px further down and right
        # (pixels within a band of the crop's edge left out)
        shifted = host.fit_mask(np.ascontiguousarray(rgb[2:, 2:]), np.ascontiguousarray(mask[2:, 2:]), cell=cell)
        moved = int((ours[2:, 2:] ^ shifted)[62:, 62:].sum())
        given = torch.from_numpy(mask).to(device)
        own = int((ours ^ device_fit.fit_mask(photo, given).cpu().numpy()).sum())
        with mock.patch.object(device_fit, "clean_specks", host_clean):
            rest = int((ours ^ device_fit.fit_mask(photo, given).cpu().numpy()).sum())
        changed = int((ours ^ mask).sum())
        rows.append(f"| {name} | {mask.mean():.0%} | {changed} | {own} ({own / max(changed, 1):.2%}) | "
                    f"{rest} ({rest / max(changed, 1):.2%}) | {moved} ({moved / max(changed, 1):.2%}) |")
    return rows


def quality(device: torch.device) -> list[str]:
    def on_device(rgb, found, plan):
        return fit_masks(rgb, found, plan, DeviceFitter(rgb, device))

    ours, theirs = outcomes(), outcomes(fit=on_device)
    rows = ["| scene | action | wrong host fit | wrong torch fit | bleed host fit | bleed torch fit |",
            "|---|---|---:|---:|---:|---:|"]
    for a, b in zip(ours, theirs):
        rows.append(f"| {a.scene} | {a.label} | {a.fitted['wrong']:.4f} | {b.fitted['wrong']:.4f} | "
                    f"{a.fitted['bleed']:.4f} | {b.fitted['bleed']:.4f} |")
    mean = lambda xs, key: float(np.mean([o.fitted[key] for o in xs]))  # noqa: E731
    rows.append(f"| all | mean | {mean(ours, 'wrong'):.4f} | {mean(theirs, 'wrong'):.4f} | "
                f"{mean(ours, 'bleed'):.4f} | {mean(theirs, 'bleed'):.4f} |")
    met = (sum(o.passed for o in ours), sum(o.passed for o in theirs))
    rows += ["", f"Cases meeting both targets (scripts/mask_quality.py): host fit {met[0]}, torch fit {met[1]} "
                 f"of {len(ours)}."]
    return rows


def cost_12mp(device: torch.device) -> list[str]:
    rgb, _ = render_room(800, 600, seed=2)
    rgb = cv2.resize(rgb, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    field = cv2.resize(np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), (4000, 3000),
                       interpolation=cv2.INTER_CUBIC)
    mask = field > np.quantile(field[::16, ::16], 0.35)
    cpu, wall = time.process_time(), time.perf_counter()
    ours = host.fit_mask(rgb, mask)
    rows = [("host (engine/maskfit.py)", time.process_time() - cpu, time.perf_counter() - wall, "-")]
    photo, given = torch.from_numpy(rgb).to(device), torch.from_numpy(mask).to(device)
    device_fit.fit_mask(photo, given)  # warm-up (kernels, caches)
    for _ in range(2):
        _sync(device)
        cpu, wall = time.process_time(), time.perf_counter()
        theirs = device_fit.fit_mask(photo, given)
        _sync(device)
        rows.append((f"torch on {device.type} (engine/edits/device/maskfit.py)", time.process_time() - cpu,
                     time.perf_counter() - wall, f"{int((ours ^ theirs.cpu().numpy()).sum())} of {ours.size}"))
    return ["| fit | host CPU s | wall s | pixels decided otherwise |", "|---|---:|---:|---:|",
            *(f"| {name} | {c:.2f} | {w:.2f} | {d} |" for name, c, w, d in rows)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()}, {os.cpu_count()} cores"
    lines = ["# Mask fit: torch next to the host", "",
             f"Device: {name} (torch {torch.__version__}); {date.today()}, commit {commit}. "
             "Command: `python -m bench.maskfit_device_parity`.", "",
             "## Pixels decided otherwise", "",
             "Segmenter-like masks of every concept, rooms at 960 x 720 and a product scene at 720 x 720; "
             "the share is of the pixels the host fit changes. The speck labelling on blocks is the step that "
             "differs by design (engine/edits/device/maskfit.py); the rest of the port gives the host's "
             "pixels but for float rounding.", "",
             *decided_otherwise(device), "",
             "## Pixels decided otherwise at 12 MP", "",
             "A room rendered at 1000 x 750 and scaled to 4000 x 3000, its large concepts' segmenter-like masks "
             "made at that size: blocks of 3 px for the sure sides and the specks, edges over 4 px. The last "
             "column is the host fit against itself with the photo cropped by 2 px (its tiles, and the blocks "
             "they start, move over the photo): the share of the band the block grid decides.", "",
             *decided_otherwise_12mp(device), "",
             "## Outline quality", "",
             "scripts/mask_quality.py's cases (devtools/outline_quality.py): the masks made ready on the host "
             "and by TorchEditor's fitter (engine/edits/device/handover.py).", "",
             *quality(device), "",
             "## One mask over 65% of a 12 MP frame", "",
             "Host CPU seconds (all threads) and wall seconds of one fit; on a GPU the torch fit's host "
             "CPU is its kernel launches and waits.", "",
             *cost_12mp(device), ""]
    text = "\n".join(lines)
    print(text)
    slug = "cuda" if device.type == "cuda" else f"cpu_{platform.machine()}"
    (RESULTS / f"maskfit_device_parity_{slug}.md").write_text(text)


if __name__ == "__main__":
    main()

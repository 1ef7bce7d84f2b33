"""Apply time per action at 1, 4 and 12 MP, next to a naive full-frame float version, same run.

    python -m bench.bench_apply                 # from gpu-worker/; writes bench/results/apply_cpu.md
    python -m bench.bench_apply --sizes 1 4     # a quicker subset
    python -m bench.bench_apply --fit           # mask fitting next to the edits: bench/results/maskfit_cpu.md
    python -m bench.bench_apply --fit --fit-beside OLD.py  # and this fit beside another engine/maskfit.py
    python -m bench.bench_apply --sizes 12 --share-limit  # recolor/tone with and without the matte's share limit
    python -m bench.bench_apply --fit --derive-beside OLD.py  # the derived Grout beside another engine/derive.py

The photo is ``scenes.render_room`` at 1 MP, scaled up with fresh sensor noise for 4 and 12 MP
(rendering 12 MP directly takes minutes and changes nothing about the timing); the masks are
scaled with it. Each action is timed on its own through ``apply_edits_with`` (the numpy back end
unless ``--backend torch``), best of ``--repeat`` runs.

"naive" is the same maths written the obvious way: the whole frame converted to float64, the
per-pixel kernel run on every pixel, the soft matte and the blend computed over the whole frame;
for remove, the exemplar fill run on the whole frame instead of the hole's window, and plain
``cv2.inpaint`` on the whole frame (the smearing baseline) for reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from bench.measure import cpu_seconds
from devtools.scenes import render_room
from devtools.segmenter_like import segmenter_like
from engine.actions.recolor import Recolor
from engine.actions.remove import Remove
from engine.actions.tone import NAMED_TONES, Tone
from engine.applier import Edit, apply_edits_with, max_reach_px
from engine.derive import lines_within
from engine.edits import blend, colour, kernels
from engine.edits.backend import NumpyBackend, TorchBackend
from engine.edits.blend import edge_band_px, soft_matte
from engine.edits.recolor import FitSamples, fit_params, initial_params, material_pattern
from engine.edits.remove import DiffusionInpainter, PatchInpainter
from engine.edits.structure_fill import StructureInpainter
from engine.edits.tone import kernel_params
from engine.maskfit import fit_mask
from engine.plan_masks import fit_masks
from engine.rules import Plan, PlannedRule
from engine.segmenter import ConceptMasks, instances_from_union
from presets.interior import PRESET

PACKAGE = Path(__file__).resolve().parent.parent

SIZES = {1: (1155, 866), 4: (2309, 1732), 12: (4000, 3000)}
PROTECT = ("Frame_Molding", "Glass_highlight", "Grout", "Door", "Window")


def scene_at(base: tuple[np.ndarray, dict[str, np.ndarray]], size: tuple[int, int], seed: int):
    rgb, masks = base
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb, masks
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng(seed).normal(0, 1.5, big.shape).astype(np.float32)
    big_masks = {k: cv2.resize(v.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
                 for k, v in masks.items()}
    return np.clip(big + 0.5, 0, 255).astype(np.uint8), big_masks


# -- the naive version -----------------------------------------------------------------------------


def _decode(rgb8: np.ndarray) -> np.ndarray:
    c = rgb8.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _encode(lin: np.ndarray) -> np.ndarray:
    c = np.clip(lin, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055) * 255.0


def naive_apply(image: np.ndarray, edit: Edit, protect: np.ndarray) -> np.ndarray:
    """One edit, every step on the whole frame in float64 (no window, no tables, no gathers)."""
    band = edge_band_px(image.shape)
    region = edit.mask & ~protect
    alpha = soft_matte(image, region, protect, band).astype(np.float64)
    if isinstance(edit.op, Remove):
        filled = PatchInpainter().inpaint(image, alpha > 0).astype(np.float64)
    else:
        lin = _decode(image).reshape(-1, 3)
        if isinstance(edit.op, Recolor):
            l_region = colour.lstar(colour.luminance(colour.to_linear(image[region])))
            params, aim = initial_params(l_region, edit.op.rgb)
            material = None
            if edit.op.material != "flat":
                l_full = colour.lstar(colour.luminance(lin.reshape(image.shape).astype(np.float32)))
                material = (material_pattern(edit.op.material, l_full, region, 0) * 3.0).astype(np.float64)
            params = fit_params(params, aim, edit.op.rgb, FitSamples(image, alpha.astype(np.float32), region, None,
                                                                     None if material is None else material))
            out = kernels.recolor(lin, params, np, None if material is None else material.reshape(-1))
        else:
            mean_l = float(colour.lstar(colour.luminance(colour.to_linear(image[region]))).mean())
            out = kernels.tone(lin, kernel_params(edit.op.params, mean_l), np)
        filled = _encode(out).reshape(image.shape)
    blended = image.astype(np.float64) * (1 - alpha[..., None]) + filled * alpha[..., None]
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


# -- timing ----------------------------------------------------------------------------------------


def commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE, capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def best_of(fn: Callable[[], object], repeat: int) -> float:
    return best_of_wall_cpu(fn, repeat)[0]


def best_of_wall_cpu(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The least wall time and the least host CPU time (all threads) over ``repeat`` runs: on a
    shared host the CPU time is the steadier of the two."""
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 12], choices=sorted(SIZES))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    parser.add_argument("--only", default="", help="run only the actions whose label contains this text")
    parser.add_argument("--out", type=Path, default=PACKAGE / "bench" / "results" / "apply_cpu.md")
    parser.add_argument("--fit", action="store_true",
                        help="time fitting segmenter-like masks next to the edits instead (bench/results/maskfit_cpu.md)")
    parser.add_argument("--fit-beside", type=Path, default=None, metavar="MASKFIT_PY",
                        help="with --fit: also time this engine/maskfit.py beside another version of it "
                             "(e.g. `git show COMMIT:gpu-worker/engine/maskfit.py`), alternately, same run")
    parser.add_argument("--derive-beside", type=Path, default=None, metavar="DERIVE_PY",
                        help="with --fit: also time deriving Grout from the fitted Tile beside another "
                             "engine/derive.py, alternately, same run")
    parser.add_argument("--share-limit", action="store_true",
                        help="also time recolor and tone with the soft matte's share limit "
                             "(blend.limit_to_share) passed over, alternately, same run")
    args = parser.parse_args()
    if args.fit:
        fit_bench(args)
        return

    backend = NumpyBackend() if args.backend == "numpy" else TorchBackend("cuda")
    base = render_room(*SIZES[1], seed=0)
    palette = PRESET.palette
    rows = []
    for mp in args.sizes:
        rgb, masks = scene_at(base, SIZES[mp], seed=mp)
        protect = np.zeros(rgb.shape[:2], bool)
        for name in PROTECT:
            protect |= masks[name]
        furniture = sorted(instances_from_union(masks["Furniture"], True), key=lambda i: i.area)
        oak = palette["oak_a"]
        actions = [
            ("recolor Wall (flat)", Edit(Recolor(palette["sage"].rgb), masks["Wall"])),
            ("recolor Floor (wood)", Edit(Recolor(oak.rgb, oak.material, oak.spread), masks["Floor"])),
            ("tone Ceiling (bright)", Edit(Tone(NAMED_TONES["bright"]), masks["Ceiling"])),
            ("remove lamp", Edit(Remove(), furniture[0].mask)),
            ("remove table", Edit(Remove(), furniture[1].mask)),
        ]
        for label, edit in actions:
            if args.only not in label:
                continue
            share = (edit.mask & ~protect).mean()
            ours = best_of(lambda: apply_edits_with(rgb, [edit], protect, backend=backend,
                                                    inpainter=StructureInpainter()), args.repeat)
            naive = best_of(lambda: naive_apply(rgb, edit, protect), 1 if mp == 12 else args.repeat)
            extra = ""
            if args.share_limit and not isinstance(edit.op, Remove):
                with_limit, without = _with_and_without_share_limit(
                    lambda: apply_edits_with(rgb, [edit], protect, backend=backend), args.repeat)
                extra = f"share limit: {with_limit:.3f} s with, {without:.3f} s without, alternately"
            if isinstance(edit.op, Remove):
                patch = best_of(lambda: apply_edits_with(rgb, [edit], protect, inpainter=PatchInpainter()), args.repeat)
                hole = cv2.dilate(edit.mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                telea = best_of(lambda: DiffusionInpainter().inpaint(rgb, hole), 1)
                extra = (f"structure fill; the exemplar fill alone {patch:.2f} s (x{ours / patch:.1f}); "
                         f"cv2.inpaint full frame {telea:.2f} s")
            rows.append((mp, label, share, ours, naive, extra))
            print(f"{mp:>3} MP  {label:24s} region {share:6.1%}  ours {ours:7.3f} s   naive {naive:7.3f} s"
                  f"   x{naive / ours:5.1f}  {extra}", flush=True)

    lines = [
        "# Apply time per action, CPU",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {date.today().isoformat()}, "
        f"commit {commit()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}; "
        f"back end `{backend.name}`. Best of {args.repeat} runs (naive at 12 MP: 1 run).",
        "",
        "Photo: the sample room (scenes.render_room, 1 MP) scaled to each size with fresh noise; "
        "protect = Frame_Molding, Glass_highlight, Grout, Door, Window. "
        "`naive`: the same maths on the whole frame in float64 (remove: the exemplar fill over the "
        f"whole frame). Soft-edge band at 1/4/12 MP: {', '.join(str(edge_band_px((SIZES[m][1], SIZES[m][0]))) for m in (1, 4, 12))} px; "
        f"reach limit {', '.join(str(max_reach_px((SIZES[m][1], SIZES[m][0]))) for m in (1, 4, 12))} px.",
        "",
        "| MP | action | region | ours (s) | naive full-frame (s) | speed-up | note |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for mp, label, share, ours, naive, extra in rows:
        lines.append(f"| {mp} | {label} | {share:.1%} | {ours:.3f} | {naive:.3f} | {naive / ours:.1f}x | {extra} |")
    if args.backend == "numpy":
        lines += ["", "The torch back end (`--backend torch`) runs the per-pixel recolor and tone kernels on "
                  "CUDA; its numbers are in the file named after the GPU.", ""]
    else:
        lines += ["", "Back end torch: the per-pixel recolor and tone kernels on CUDA; matte, colour fit, "
                  "blend and the remove fill on the host CPU.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


def fit_bench(args: argparse.Namespace) -> None:
    """Fitting a photo's segmenter-like masks (engine.plan_masks.fit_masks: every concept of the
    plan, protect ones grown only) against the plan's three edits, same photo, same run."""
    base = render_room(*SIZES[1], seed=0)
    palette = PRESET.palette
    rules = (PlannedRule("Wall", Recolor(palette["sage"].rgb), None),
             PlannedRule("Floor", Recolor(palette["oak_a"].rgb, "wood", palette["oak_a"].spread), None),
             PlannedRule("Ceiling", Tone(NAMED_TONES["bright"]), None))
    plan = Plan(PRESET, rules, PROTECT)
    rows, beside, derived = [], [], []
    other = _load_module(args.fit_beside) if args.fit_beside else None
    other_derive = _load_module(args.derive_beside) if args.derive_beside else None
    for mp in args.sizes:
        rgb, masks = scene_at(base, SIZES[mp], seed=mp)
        coarse = segmenter_like(masks, seed=mp)
        found = {c.name: ConceptMasks(c.name, coarse[c.name], instances_from_union(coarse[c.name], c.multi_instance))
                 for c in plan.concepts_to_prompt()}
        if other is not None:
            beside.append((mp, *_fit_beside(rgb, {n: m.union for n, m in found.items()}, other, args.repeat)))
            print(f"{mp:>3} MP  fit_mask here {beside[-1][1]:.3f} CPU s, beside {beside[-1][2]:.3f} CPU s", flush=True)
        fit_s = best_of_wall_cpu(lambda: fit_masks(rgb, found, plan), args.repeat)
        ready = fit_masks(rgb, found, plan)
        if other_derive is not None:
            tile = fit_mask(rgb, found["Tile"].union)
            derived.append((mp, *_alternately([lambda: lines_within(rgb, [tile]),
                                               lambda: other_derive.lines_within(rgb, [tile])], args.repeat)))
            print(f"{mp:>3} MP  Grout derived here {derived[-1][1]:.3f} CPU s, beside {derived[-1][2]:.3f} CPU s",
                  flush=True)
        protect = np.zeros(rgb.shape[:2], bool)
        for name in PROTECT:
            protect |= ready[name].union
        edits = [Edit(r.op, ready[r.concept].union) for r in rules]
        edit_s = best_of_wall_cpu(lambda: apply_edits_with(rgb, edits, protect, backend=NumpyBackend()), args.repeat)
        rows.append((mp, *fit_s, *edit_s))
        print(f"{mp:>3} MP  fit {fit_s[0]:7.3f} s ({fit_s[1]:.3f} CPU s)   edits {edit_s[0]:7.3f} s "
              f"({edit_s[1]:.3f} CPU s)", flush=True)
    load = os.getloadavg()[0]
    lines = [
        "# Mask fitting next to the edits, CPU",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work: load average {load:.1f} at "
        f"the end), Python {platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}; "
        f"{time.strftime('%Y-%m-%d')}, commit {commit()}. Best of {args.repeat} runs. `python -m bench.bench_apply "
        f"--fit --sizes {' '.join(map(str, args.sizes))} --repeat {args.repeat}` writes this table; the sections "
        "after it are kept.",
        "",
        "Photo: the sample room scaled to each size, masks from devtools/segmenter_like.py. `fit`: "
        "engine.plan_masks.fit_masks for Wall, Floor, Ceiling and the protect concepts "
        f"({', '.join(PROTECT)}; Grout derived from Tile); `edits`: recolor Wall, recolor Floor (wood), tone "
        "Ceiling with those masks, numpy back end. CPU s: host CPU time of all threads (OpenCV runs some "
        "steps on several), the steadier figure on a shared host.",
        "",
        "| MP | fit (s) | fit (CPU s) | edits (s) | edits (CPU s) | fit / edits (CPU) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {mp} | {fw:.3f} | {fc:.3f} | {ew:.3f} | {ec:.3f} | {fc / ec:.2f} |" for mp, fw, fc, ew, ec in rows),
        "",
    ]
    out = PACKAGE / "bench" / "results" / "maskfit_cpu.md"
    kept = out.read_text(encoding="utf-8").split("\n## ", 1) if out.exists() else []
    text = "\n".join(lines) + ("\n## " + kept[1] if len(kept) == 2 else "")
    stamp = f"Commit {commit()}, {time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end."
    if beside:
        text = text.rstrip("\n") + "\n\n" + _beside_section(
            f"This fit beside {args.fit_beside.name}, same run",
            f"`--fit-beside {args.fit_beside.name}`: engine.maskfit.fit_mask (fit_protect for the protect concepts) "
            f"on each prompted concept's mask above, this module and {args.fit_beside.name} loaded beside it, run "
            f"alternately, best of {args.repeat}; host CPU s summed over the concepts. {stamp}",
            "this fit", beside)
    if derived:
        text = text.rstrip("\n") + "\n\n" + _beside_section(
            f"The derived Grout beside {args.derive_beside.name}, same run",
            f"`--derive-beside {args.derive_beside.name}`: engine.derive.lines_within (Grout from the fitted Tile "
            f"mask above) and {args.derive_beside.name}'s, run alternately, best of {args.repeat}; host CPU s. {stamp}",
            "this", derived)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")


def _beside_section(title: str, text: str, this: str, rows: list[tuple[int, float, float]]) -> str:
    """A section of maskfit_cpu.md: this code's CPU s beside another version's, per size."""
    return "\n".join([
        f"## {title}", "", text, "",
        f"| MP | {this} (CPU s) | beside (CPU s) | this / beside |",
        "| ---: | ---: | ---: | ---: |",
        *(f"| {mp} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} |" for mp, ours, theirs in rows),
        "",
    ])


def _alternately(runs: list[Callable[[], object]], repeat: int) -> list[float]:
    """Each run's best host CPU seconds, the runs taken in turns ``repeat`` times."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for run, taken in zip(runs, times):
            taken.append(best_of_wall_cpu(run, 1)[1])
    return [min(taken) for taken in times]


def _with_and_without_share_limit(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best times of ``run`` with the soft matte's share limit and with it passed over (the
    guided filter's weights kept), taken in turns."""
    limit = blend.limit_to_share
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(repeat):
            for on in (True, False):
                blend.limit_to_share = limit if on else (lambda *args: args[4])
                times[on].append(best_of(run, 1))
    finally:
        blend.limit_to_share = limit
    return min(times[True]), min(times[False])


def _load_module(path: Path):
    """Another version of an engine module (maskfit.py, derive.py), loaded under its own name
    beside the real one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"beside_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fit_beside(rgb: np.ndarray, masks: dict[str, np.ndarray], other, repeat: int) -> tuple[float, float]:
    """Host CPU s of fitting ``masks`` with engine.maskfit and with ``other``, alternately, best of ``repeat``."""
    import engine.maskfit as here

    def fit_all(module) -> Callable[[], object]:
        return lambda: [(module.fit_protect if name in PROTECT else module.fit_mask)(rgb, mask)
                        for name, mask in masks.items()]

    ours, theirs = _alternately([fit_all(here), fit_all(other)], repeat)
    return ours, theirs


if __name__ == "__main__":
    main()

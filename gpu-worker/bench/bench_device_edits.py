"""One photo's edits, the numpy editor next to the torch editor, each in its own process, same run.

    python -m bench.bench_device_edits                  # from gpu-worker/: 12 MP, torch on CPU
    python -m bench.bench_device_edits --megapixels 4 --inpainter structure,patch
    python -m bench.bench_device_edits --reference acfc935   # that commit's editors first

``--inpainter``: remove's fill, ``structure`` (the worker's default) and/or ``patch``.
``--reference COMMIT``: the same rows for that commit's engine, run from an export of it
(``git archive``) with this file's measuring code copied in, before this tree's rows.

The photo is bench_e2e's (a rendered room, scaled up with sensor noise) and the masks its
simulated device's blobs (65% of the frame each): the e2e job's rules (recolor wall, recolor
floor to walnut, tone the ceiling, remove the furniture; protect windows and frames). Per editor:
wall and host CPU seconds of the edits, and the process's peak memory above what it held before
(on a CPU device that is the device path's working memory; on CUDA, also the peak the device
allocated), the torch calls made (each about one kernel launch on a GPU, where each costs the
host CPU to launch), the largest difference between the two results, and, apart, the host CPU,
torch calls and peak memory of fitting the same masks to the photo (``fit_masks``; the peak
read again from the fit's start, so the two peaks say what each part of the editor's slot
holds).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_e2e import make_photos, prompts_of
from bench.devices import blob_masks
from bench.measure import reset_peak_rss, status_mb

PACKAGE = Path(__file__).resolve().parent.parent


def child(args: argparse.Namespace) -> dict:
    import torch

    from engine.editor import choose_editor
    from engine.edits.remove import PatchInpainter
    from engine.edits.structure_fill import StructureInpainter
    from engine.pipeline import edits_for
    from engine.postprocess import decode_image

    photo = make_photos(1, args.megapixels, PACKAGE / "bench" / "out" / "photos")[0]
    rgb = decode_image(photo, max_pixels=10**9, max_side=8192).rgb
    plan, concepts = prompts_of()
    masks = {c.name: blob_masks(c, rgb.shape[:2], args.coverage, seed=i) for i, c in enumerate(concepts)}
    edits, protect = edits_for(plan, masks)
    inpainter = {"structure": StructureInpainter, "patch": PatchInpainter}[args.inpainter]()
    editor = choose_editor(args.child, inpainter, 1, 1 << 20)
    editor.apply(rgb[:256, :256].copy(), [], protect[:256, :256])  # imports, pools, allocator
    before = reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    with _counter(args.child) as counted:
        result = editor.apply(rgb, edits, protect)
    wall = time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"editor": f"{editor.name} on {getattr(editor, 'device', 'host')}", "wall_s": wall,
           "cpu_s": usage.ru_utime + usage.ru_stime - cpu0, "peak_mb": status_mb("VmHWM") - before,
           "pixels": int(rgb.shape[0] * rgb.shape[1]), "calls": getattr(counted, "calls", 0),
           "touched": float((result != rgb).any(axis=2).mean())}
    # the masks' fit on the same photo, after the edits' peak is read (the edits above use the
    # masks as given, so both editors' results compare)
    if torch.cuda.is_available():
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    before = reset_peak_rss()
    cpu0 = time.process_time()
    with _counter(args.child) as counted:
        editor.fit_masks(rgb, masks, plan)
    out.update(fit_cpu_s=time.process_time() - cpu0, fit_calls=getattr(counted, "calls", 0),
               fit_peak_mb=status_mb("VmHWM") - before)
    if torch.cuda.is_available():
        out["fit_gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    np.save(args.result, result)
    return out


def _counter(editor: str):
    """Counts torch calls on this thread (each about one kernel launch on a GPU) for a torch editor."""
    from bench.devices import _TorchCalls

    return _TorchCalls() if editor == "torch" else contextlib.nullcontext()


def _export(commit: str, into: Path) -> Path:
    """``commit``'s gpu-worker/ under ``into``, with this file (the measuring code) in its bench/."""
    archive = subprocess.run(["git", "archive", commit, "gpu-worker"], capture_output=True, check=True,
                             cwd=PACKAGE.parent)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    package = into / "gpu-worker"
    (package / "bench" / Path(__file__).name).write_text(Path(__file__).read_text())
    return package


def _run_child(package: Path, editor: str, inpainter: str, path: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_device_edits", "--child", editor, "--result", str(path),
           "--megapixels", str(args.megapixels), "--coverage", str(args.coverage), "--inpainter", inpainter]
    env = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "4194304", **os.environ}
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=package, env=env)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-4000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--coverage", type=float, default=0.65)
    parser.add_argument("--editors", default="numpy,torch")
    parser.add_argument("--inpainter", default="structure")
    parser.add_argument("--reference", help="a commit whose editors run first, side by side")
    parser.add_argument("--child")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=PACKAGE).stdout.strip()
    rows, diffs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        trees = [(args.reference, _export(args.reference, Path(tmp)))] if args.reference else []
        for (tree, package), inpainter in itertools.product(trees + [(commit, PACKAGE)], args.inpainter.split(",")):
            results = {}
            for name in args.editors.split(","):
                path = Path(tmp) / f"{tree}-{inpainter}-{name}.npy"
                rows.append({"tree": tree, "inpainter": inpainter, **_run_child(package, name, inpainter, path, args)})
                results[name] = np.load(path)
            first, last = (results[n].astype(np.int16) for n in (next(iter(results)), list(results)[-1]))
            apart = np.abs(first - last).max(axis=2)
            diffs.append(f"- {tree}, {inpainter} fill: largest difference {int(apart.max())} level(s), "
                         f"{int((apart > 1).sum())} pixels more than 1 level apart.")
    lines = [f"# One photo's edits at {args.megapixels:g} MP: numpy editor and torch editor",
             "", f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared); date "
                 f"{time.strftime('%Y-%m-%d')}; commit {commit}.", "",
             f"Command: `python -m bench.bench_device_edits {' '.join(sys.argv[1:])}`", "",
             f"Masks: a blob over {args.coverage:.0%} of the frame per concept (bench_e2e's simulated device); "
             "the e2e job's rules (recolor, recolor to wood, tone, remove). Peak: the process's resident memory "
             "above what it held before the edits (for torch on the CPU, the device path's working memory); fit: the same "
             "from the fit's start.", "",
             "| commit | remove's fill | editor | wall s | host CPU s | peak MB | bytes a pixel at peak | "
             "pixels changed | peak GPU MB | torch calls | fit: host CPU s | fit: torch calls | fit: peak MB | "
             "fit: bytes a pixel | fit: peak GPU MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tree']} | {r['inpainter']} | {r['editor']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{r['peak_mb']:.0f} | {r['peak_mb'] * 2**20 / r['pixels']:.0f} | {r['touched']:.1%} | "
                     f"{r.get('gpu_peak_mb', 0):.0f} | {r['calls']} | {r['fit_cpu_s']:.2f} | {r['fit_calls']} | "
                     f"{r.get('fit_peak_mb', 0):.0f} | {r.get('fit_peak_mb', 0) * 2**20 / r['pixels']:.0f} | "
                     f"{r.get('fit_gpu_peak_mb', 0):.0f} |")
    lines += ["", "Between the editors' results:", "", *diffs]
    text = "\n".join(lines) + "\n"
    print(text)
    device = rows[-1]["editor"].split(" on ")[-1].replace(":", "")
    out = PACKAGE / "bench" / "results" / f"device_edits_{args.megapixels:g}mp_{device}_{platform.machine()}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()

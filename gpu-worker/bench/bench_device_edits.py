"""One photo's edits, the numpy editor next to the torch editor, each in its own process, same run.

    python -m bench.bench_device_edits                  # from gpu-worker/: 12 MP, torch on CPU
    python -m bench.bench_device_edits --megapixels 4

The photo is bench_e2e's (a rendered room, scaled up with sensor noise) and the masks its
simulated device's blobs (65% of the frame each): the e2e job's rules (recolor wall, recolor
floor to walnut, tone the ceiling, remove the furniture; protect windows and frames). Per editor:
wall and host CPU seconds of the edits, and the process's peak memory above what it held before
(on a CPU device that is the device path's working memory; on CUDA, also the peak the device
allocated), and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
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
    from engine.pipeline import edits_for
    from engine.postprocess import decode_image

    photo = make_photos(1, args.megapixels, PACKAGE / "bench" / "out" / "photos")[0]
    rgb = decode_image(photo, max_pixels=10**9, max_side=8192).rgb
    plan, concepts = prompts_of()
    masks = {c.name: blob_masks(c, rgb.shape[:2], args.coverage, seed=i) for i, c in enumerate(concepts)}
    edits, protect = edits_for(plan, masks)
    editor = choose_editor(args.child, PatchInpainter(), 1, 1 << 20)
    editor.apply(rgb[:256, :256].copy(), [], protect[:256, :256])  # imports, pools, allocator
    before = reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    result = editor.apply(rgb, edits, protect)
    wall = time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"editor": f"{editor.name} on {getattr(editor, 'device', 'host')}", "wall_s": wall,
           "cpu_s": usage.ru_utime + usage.ru_stime - cpu0, "peak_mb": status_mb("VmHWM") - before,
           "pixels": int(rgb.shape[0] * rgb.shape[1]),
           "touched": float((result != rgb).any(axis=2).mean())}
    if torch.cuda.is_available():
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    np.save(args.result, result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--coverage", type=float, default=0.65)
    parser.add_argument("--editors", default="numpy,torch")
    parser.add_argument("--child")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.editors.split(","):
            path = Path(tmp) / f"{name}.npy"
            cmd = [sys.executable, "-m", "bench.bench_device_edits", "--child", name, "--result", str(path),
                   "--megapixels", str(args.megapixels), "--coverage", str(args.coverage)]
            env = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "4194304", **os.environ}
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=PACKAGE, env=env)
            if run.returncode != 0:
                raise SystemExit(run.stderr[-4000:])
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            results[name] = np.load(path)
    names = list(results)
    diff = (int(np.abs(results[names[0]].astype(np.int16) - results[names[-1]].astype(np.int16)).max())
            if len(names) > 1 else 0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=PACKAGE).stdout.strip()
    lines = [f"# One photo's edits at {args.megapixels:g} MP: numpy editor and torch editor",
             "", f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared); date "
                 f"{time.strftime('%Y-%m-%d')}; commit {commit}.", "",
             f"Command: `python -m bench.bench_device_edits {' '.join(sys.argv[1:])}`", "",
             f"Masks: a blob over {args.coverage:.0%} of the frame per concept (bench_e2e's simulated device); "
             "the e2e job's rules. Peak: the process's resident memory above what it held before the edits "
             "(for torch on the CPU, the device path's working memory).", "",
             "| editor | wall s | host CPU s | peak MB | bytes a pixel at peak | pixels changed | peak GPU MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['editor']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mb']:.0f} | "
                     f"{r['peak_mb'] * 2**20 / r['pixels']:.0f} | {r['touched']:.1%} | "
                     f"{r.get('gpu_peak_mb', 0):.0f} |")
    lines += ["", f"Largest difference between the editors' results: {diff} level(s)."]
    text = "\n".join(lines) + "\n"
    print(text)
    device = rows[-1]["editor"].split(" on ")[-1].replace(":", "")
    out = PACKAGE / "bench" / "results" / f"device_edits_{args.megapixels:g}mp_{device}_{platform.machine()}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()

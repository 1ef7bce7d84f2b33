"""Hostile inputs: time and peak memory of the worker's decoders against a reference commit's,
side by side in one run, each measurement in a fresh process.

    cd gpu-worker && python -m bench.bench_hostile_inputs [--reference COMMIT]
    # writes bench/results/hostile_inputs_<host>.md

Cases:
- ``instances_1000_full_frame``: a crafted instances file (a thousand instances whose boxes are
  the whole 4000 x 3000 image) read by an ``apply`` job.
- ``png16_grey_120mp``: a 16-bit greyscale PNG of 12000 x 10000 (a ramp, so a few hundred kB)
  decoded to the result's 8-bit RGB at ``MAX_OUTPUT_SIDE`` 4096; next to it the same as 8-bit.
  Beside each decode, ``decoded_cost_bytes`` (what the memory budget counts for the photo).

The reference decoders are read from ``git show COMMIT:gpu-worker/engine/...`` and imported
beside the current ones. "peak MiB" is the process's peak resident size above its size just
before the decode (Linux's VmHWM, reset just before).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "001327c"
WIDTH, HEIGHT = 4000, 3000


def attack_file() -> bytes:
    entry = {"score": 0.9, "bbox": [0, 0, WIDTH, HEIGHT], "area": WIDTH * HEIGHT, "rle": [0, WIDTH * HEIGHT]}
    concepts = {"Wall": [{"id": i, **entry} for i in range(1000)]}
    return json.dumps({"width": WIDTH, "height": HEIGHT, "concepts": concepts}, separators=(",", ":")).encode()


def grey_png(bits: int) -> bytes:
    """A 12000 x 10000 greyscale PNG (120 MP, ``MAX_INPUT_PIXELS``) of a smooth ramp."""
    ramp = np.linspace(0, 65535 if bits == 16 else 255, 12_000).astype(np.uint16 if bits == 16 else np.uint8)
    out = io.BytesIO()
    Image.fromarray(np.broadcast_to(ramp, (10_000, 12_000)).copy()).save(out, format="PNG", compress_level=9)
    return out.getvalue()


def reference_module(commit: str, path: str, name: str):
    source = subprocess.run(["git", "show", f"{commit}:gpu-worker/{path}"], cwd=ROOT, check=True,
                            capture_output=True).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / f"{name}.py").write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        line = next(line for line in fh if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak() -> None:
    """Linux: the peak resident size (VmHWM) starts again from the current size."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def child(variant: str, case: str, data_path: str, commit: str) -> dict:
    """One decode in this process: seconds, peak MiB above the start, and what came out."""
    data = Path(data_path).read_bytes()
    if variant == "reference":
        postprocess = reference_module(commit, "engine/postprocess.py", "reference_postprocess")
    else:
        import engine.postprocess as postprocess
    reset_peak()
    start_rss = status_mib("VmRSS")
    clock, cpu = time.perf_counter(), time.process_time()
    try:
        if case.startswith("instances"):
            found = postprocess.decode_instances(data, (WIDTH, HEIGHT))
            outcome = f"decoded {sum(len(v) for v in found.values())} instances"
        else:
            image = postprocess.decode_image(data, max_pixels=120_000_000, max_side=4096)
            outcome = f"decoded {image.size[0]}x{image.size[1]} RGB"
    except Exception as exc:  # the outcome is what is measured
        outcome = f"refused: {type(exc).__name__}"
    seconds, cpu = time.perf_counter() - clock, time.process_time() - cpu
    peak = status_mib("VmHWM")
    if variant == "current" and not case.startswith("instances"):
        outcome += f"; decoded_cost_bytes {postprocess.decoded_cost_bytes(data, 4096) / 2**20:.0f} MiB"
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak - start_rss, "outcome": outcome}


def measure(variant: str, case: str, data_path: str, commit: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_hostile_inputs", "--child", variant, case, data_path,
                          "--reference", commit], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=REFERENCE, help="commit whose decoders are compared")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "CASE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.reference)))
        return
    work = Path(tempfile.mkdtemp())
    inputs = {"instances_1000_full_frame": attack_file(), "png16_grey_120mp": grey_png(16), "png8_grey_120mp": grey_png(8)}
    rows = []
    for case, data in inputs.items():
        path = work / case
        path.write_bytes(data)
        for variant in ("reference", "current"):
            result = measure(variant, case, str(path), args.reference)
            label = f"{args.reference}" if variant == "reference" else "this tree"
            rows.append(f"| `{case}` ({len(data) / 1024:.0f} kB) | {label} | {result['seconds']:.2f} | "
                        f"{result['cpu_seconds']:.2f} | "
                        f"{result['peak_mib']:.0f} | {result['outcome']} |")
            print(rows[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    host = f"{platform.machine()}, {os.cpu_count()} cores (shared)"
    text = "\n".join([
        "# Hostile inputs: decoders side by side",
        "",
        f"Host: {host}, Python {platform.python_version()}; {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"commit {commit}, reference {args.reference}. One fresh process per row.",
        "",
        "| input | decoder | wall s | CPU s | peak MiB above start | outcome |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
    ])
    target = ROOT / "bench" / "results" / f"hostile_inputs_{platform.machine()}_{os.cpu_count()}cores.md"
    target.write_text(text)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

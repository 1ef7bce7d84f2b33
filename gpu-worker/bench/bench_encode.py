"""Lossless result encoding at 12 MP: the worker's PNG writer next to Pillow's and OpenCV's, same run.

    cd gpu-worker && python -m bench.bench_encode      # writes bench/results/encode_<host>.md

The photo is one of the end-to-end benchmark's (a rendered room upscaled to 12 MP with sensor
noise, so it compresses like a photo, not like a flat render). Each encoder's output is decoded
again and compared with the input: every row must be lossless.
"""

from __future__ import annotations

import io
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.bench_e2e import make_photos
from engine.png import write_png

ROOT = Path(__file__).resolve().parent.parent


def pillow(rgb: np.ndarray, **params) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", **params)
    return out.getvalue()


ENCODERS = {
    "Pillow optimize=True (naive)": lambda rgb: pillow(rgb, optimize=True),
    "Pillow compress_level=6 (default)": lambda rgb: pillow(rgb),
    "Pillow compress_level=1": lambda rgb: pillow(rgb, compress_level=1),
    "OpenCV (libpng), level 1, RLE strategy": lambda rgb: cv2.imencode(
        ".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])[1],
    "worker: Up filter + ISA-L level 1, 1 thread": lambda rgb: write_png(rgb, level=1, threads=1),
    f"worker: Up filter + ISA-L level 1, {os.cpu_count()} threads (as deployed)": lambda rgb: write_png(rgb, level=1),
}


def main() -> None:
    data = make_photos(1, 12.0, ROOT / "bench" / "out" / "photos")[0]
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    rows = []
    for name, encode in ENCODERS.items():
        seconds = float("inf")
        for _ in range(1 if "optimize" in name else 3):
            started = time.perf_counter()
            png = bytes(encode(rgb))
            seconds = min(seconds, time.perf_counter() - started)
        same = np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), rgb)
        rows.append((name, seconds, len(png) / 2**20, same))
    baseline = rows[0][1]
    lines = [f"# PNG encode, {rgb.shape[1]}x{rgb.shape[0]} photo", "",
             f"Host: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
             "best of 3 runs each (Pillow's optimize=True: one run).", "",
             "| encoder | seconds | MB | lossless | speed-up vs optimize=True |", "| --- | ---: | ---: | :---: | ---: |"]
    lines += [f"| {n} | {s:.2f} | {mb:.1f} | {'yes' if ok else 'NO'} | {baseline / s:.1f}x |" for n, s, mb, ok in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "results" / f"encode_{platform.machine()}_{os.cpu_count()}cores.md").write_text(text)


if __name__ == "__main__":
    main()

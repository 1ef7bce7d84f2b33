"""Segmentation speed: this worker's way (one vision pass per photo) next to the naive way.

    cd gpu-worker && python -m bench.bench_segment           # tiny checkpoint (default without a GPU)
    cd gpu-worker && python -m bench.bench_segment --full    # full-size Sam3Config(), random weights, bf16, CUDA

Both ways run in the same process, on the same photos, with the same post-processing:

- ``one vision pass``: ``Sam3Segmenter.segment`` as the worker calls it: the photos' vision
  features once, then every prompt in one batched pass; text features cached.
- ``naive``: one full ``Sam3Model`` forward per (photo, prompt), vision and text encoders
  included: the usage shown in the transformers docs.

Measured: segmentation time (``segment``: model and post-processing, masks back on the host)
for 1 prompt and for 6 prompts on one photo, median of ``--repeats``, and the ratio 6 prompts /
1 prompt; the same for the model alone (``detect``: vision, text and prompt passes, no mask
post-processing); photos per second with 6 prompts at 1, 4 and 8 photos in flight (that many
photos handed to one ``segment`` call, as the worker's batcher does). So that post-processing costs the same whatever the random weights score, every prompt
keeps its 3 best detections (threshold 0, ``max_instances=3``). The table is printed and written
to ``bench/results/segment_<device>.md``.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import transformers

from engine.sam3 import Detections, Sam3Segmenter, device_name, load_sam3_segmenter
from engine.segmenter import SegmentRequest
from engine.settings import Settings
from presets import PRESETS, Concept
from tests.sam3_tiny import save_tiny_sam3, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "bench" / "results"
PROMPTS_6 = ["Wall", "Floor", "Ceiling", "Door", "Window", "Furniture"]
IN_FLIGHT = [1, 4, 8]
KEEP_PER_PROMPT = 3


class NaiveSam3Segmenter(Sam3Segmenter):
    """The same segmenter, but ``detect`` runs one full model forward per (photo, prompt)."""

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor], prompts: Sequence[str]) -> list[Detections]:
        found = []
        for image in images:
            pixel_values = self._pixel_values([image])
            scores, masks = [], []
            for prompt in prompts:
                tokens = self.processor(text=[prompt], return_tensors="pt").to(self.device)
                out = self.model(pixel_values=pixel_values, **tokens)
                scores.append(out.pred_logits.float().sigmoid() * out.presence_logits.float().sigmoid())
                masks.append(out.pred_masks)
            found.append(Detections(torch.cat(scores), torch.cat(masks)))
        return found


# -- set-up ------------------------------------------------------------------------------------


def tiny_segmenter(folder: Path, device: str) -> Sam3Segmenter:
    """The tiny checkpoint through the production loader."""
    checkpoint = str(save_tiny_sam3(folder))
    settings = Settings(_env_file=None, sam3_model=checkpoint, sam3_device=device)  # type: ignore[call-arg]
    return load_sam3_segmenter(settings)


def full_segmenter(device: str) -> Sam3Segmenter:
    """Full-size ``Sam3Config()`` with random weights (bf16 on CUDA), the real 1008 px input."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    torch_device = torch.device(device)
    dtype = torch.bfloat16 if torch_device.type == "cuda" else torch.float32
    with torch_device:  # initialise on the device: seconds instead of minutes on the CPU
        model = Sam3Model(Sam3Config()).to(dtype).eval()
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tiny_tokenizer())
    segmenter = Sam3Segmenter(model, processor, torch_device)
    segmenter.warm_up()
    return segmenter


def room_photos(count: int, width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    photos = []
    for i in range(count):
        horizon = height * (0.55 + 0.02 * i)
        img = np.where((yy < horizon)[..., None], [205, 195, 175], [140, 100, 60]).astype(np.float32)
        img *= (0.75 + 0.25 * xx / width)[..., None]
        img += rng.normal(0, 4, img.shape)
        photos.append(np.clip(img, 0, 255).astype(np.uint8))
    return photos


def concepts(names: Sequence[str]) -> list[Concept]:
    preset = PRESETS["interior"].concepts
    return [Concept(n, preset[n].prompt, 0.0, preset[n].multi_instance) for n in names]


# -- measuring ---------------------------------------------------------------------------------


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()  # returns host numpy masks, so the device work is finished when it returns
    return time.perf_counter() - started


def median_seconds_side_by_side(runs: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each run; the runs alternate, so a slow spell of a shared machine
    hits both ways alike instead of one of them."""
    for run in runs:
        run()  # warm: first call for these shapes
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, found in zip(runs, times):
            found.append(timed(run))
    return [statistics.median(found) for found in times]


def vision_passes_per_photo(segmenter: Sam3Segmenter, photo: np.ndarray, names: Sequence[str]) -> float:
    images: list[int] = []
    hook = segmenter.model.vision_encoder.register_forward_hook(lambda m, args, out: images.append(len(args[0])))
    try:
        segmenter.segment([SegmentRequest(photo, "count")], concepts(names))
    finally:
        hook.remove()
    return float(sum(images))


def measure(ways: Sequence[Sam3Segmenter], photos: list[np.ndarray], repeats: int) -> list[dict[str, float]]:
    """The same measurements for each way, taken side by side."""

    def calls(count: int, names: Sequence[str]) -> list[Callable[[], object]]:
        requests = [SegmentRequest(p, f"p{i}") for i, p in enumerate(photos[:count])]
        return [lambda way=way: way.segment(requests, concepts(names)) for way in ways]

    def detections(names: Sequence[str]) -> list[Callable[[], object]]:
        image = torch.from_numpy(photos[0]).to(ways[0].device).permute(2, 0, 1)
        prompts = [c.prompt for c in concepts(names)]
        return [lambda way=way: [d.scores.cpu() for d in way.detect([image], prompts)] for way in ways]

    found: list[dict[str, float]] = [{} for _ in ways]
    for key, runs in [
        ("ms_1", calls(1, PROMPTS_6[:1])),
        ("ms_6", calls(1, PROMPTS_6)),
        ("model_ms_1", detections(PROMPTS_6[:1])),
        ("model_ms_6", detections(PROMPTS_6)),
    ]:
        for numbers, seconds in zip(found, median_seconds_side_by_side(runs, repeats)):
            numbers[key] = seconds * 1000
    for n in IN_FLIGHT:
        for numbers, seconds in zip(found, median_seconds_side_by_side(calls(n, PROMPTS_6), max(3, repeats // 2))):
            numbers[f"pps_{n}"] = n / seconds
    for numbers, way in zip(found, ways):
        numbers["vision_passes_6"] = vision_passes_per_photo(way, photos[0], PROMPTS_6)
    return found


# -- report ------------------------------------------------------------------------------------


def table(fast: dict[str, float], naive: dict[str, float]) -> str:
    rows = [
        ("segment: 1 prompt, 1 photo (ms)", "ms_1", "{:.1f}"),
        ("segment: 6 prompts, 1 photo (ms)", "ms_6", "{:.1f}"),
        ("segment: ratio 6 prompts / 1 prompt", "ratio", "{:.2f}"),
        ("model only: 1 prompt, 1 photo (ms)", "model_ms_1", "{:.1f}"),
        ("model only: 6 prompts, 1 photo (ms)", "model_ms_6", "{:.1f}"),
        ("model only: ratio 6 prompts / 1 prompt", "model_ratio", "{:.2f}"),
        ("vision passes per photo (6 prompts)", "vision_passes_6", "{:.0f}"),
        *[(f"segment: photos/s, {n} in flight (6 prompts)", f"pps_{n}", "{:.2f}") for n in IN_FLIGHT],
    ]
    for found in (fast, naive):
        found["ratio"] = found["ms_6"] / found["ms_1"]
        found["model_ratio"] = found["model_ms_6"] / found["model_ms_1"]
    lines = ["| measurement | one vision pass (worker) | naive: full forward per prompt | speed-up |",
             "| --- | ---: | ---: | ---: |"]
    for label, key, fmt in rows:
        if "ms_" in key:
            gain = f"{naive[key] / fast[key]:.2f}x"
        elif key.startswith("pps_"):
            gain = f"{fast[key] / naive[key]:.2f}x"
        else:
            gain = ""
        lines.append(f"| {label} | {fmt.format(fast[key])} | {fmt.format(naive[key])} | {gain} |")
    return "\n".join(lines)


def header(segmenter: Sam3Segmenter, label: str, size: tuple[int, int]) -> str:
    side = segmenter.processor.image_processor.size["height"]
    params = sum(p.numel() for p in segmenter.model.parameters()) / 1e6
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"# Segmentation benchmark: {device_name(segmenter.device)}",
        "",
        f"- device: {device_name(segmenter.device)} ({segmenter.device.type}, {torch.get_num_threads()} CPU threads)",
        f"- model: {label}, {params:.1f} M parameters, {str(segmenter.dtype).removeprefix('torch.')}, "
        f"input {side} x {side}, random weights",
        f"- photo: {size[0]} x {size[1]} px; every prompt keeps its {KEEP_PER_PROMPT} best detections, "
        "refined at the photo's size",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, {when}",
        "- command: `python -m bench.bench_segment " + " ".join(sys.argv[1:]) + "`",
        "",
        "",
    ])


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_group = parser.add_mutually_exclusive_group()
    size_group.add_argument("--tiny", action="store_true", help="tiny random checkpoint (default without CUDA)")
    size_group.add_argument("--full", action="store_true", help="full-size Sam3Config(), random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--photo", default=None, help="photo size WxH (default 640x480 tiny, 2048x1536 full)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    args = parser.parse_args(argv)

    full = args.full or (not args.tiny and args.device.startswith("cuda"))
    width, height = map(int, (args.photo or ("2048x1536" if full else "640x480")).split("x"))
    repeats = args.repeats or (5 if full else 9)
    with tempfile.TemporaryDirectory() as tmp:
        fast = full_segmenter(args.device) if full else tiny_segmenter(Path(tmp), args.device)
    fast.max_instances = KEEP_PER_PROMPT
    naive = NaiveSam3Segmenter(fast.model, fast.processor, fast.device, max_instances=KEEP_PER_PROMPT)
    photos = room_photos(max(IN_FLIGHT), width, height)

    print(f"device: {device_name(fast.device)}", flush=True)
    fast_numbers, naive_numbers = measure([fast, naive], photos, repeats)
    report = header(fast, "full-size Sam3Config()" if full else "tiny Sam3Config (tests/sam3_tiny.py)",
                    (width, height)) + table(fast_numbers, naive_numbers) + "\n"
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"segment_{slug(device_name(fast.device))}.md"
    out.write_text(report)
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

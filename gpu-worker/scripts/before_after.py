"""The README's picture: the sample room before and after the sample job, side by side.

    python -m scripts.before_after            # from gpu-worker/; writes ../docs/before_after.jpg

The room is rendered by ``devtools.scenes.render_room`` together with its exact masks; the photo
goes through the worker's own pipeline (``engine.wiring.build_pipeline``) with the local
storage back end and the file segmenter serving those masks (marked exact: used as they are, not
fitted), under the rules of ``sample.json``.
Nothing leaves the machine: with no callback secret the callback is not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from devtools.scenes import render_room
from engine.job import unwrap_event
from engine.logs import configure_logging
from engine.segmenter import Outline
from engine.settings import PACKAGE_DIR, Settings
from engine.stored_masks import encode_mask
from engine.wiring import build_pipeline

SAMPLE_JOB = PACKAGE_DIR / "sample.json"
OUT = PACKAGE_DIR.parent / "docs" / "before_after.jpg"


def run_sample(width: int, height: int, seed: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) RGB arrays: the rendered room and the pipeline's result for it."""
    job = unwrap_event(json.loads(SAMPLE_JOB.read_text(encoding="utf-8")))
    item = job["items"][0]
    rgb, masks = render_room(width, height, seed)
    photo = folder / "store" / item["input_key"]
    photo.parent.mkdir(parents=True)
    Image.fromarray(rgb).save(photo, format="PNG")
    mask_dir = folder / "masks" / Path(item["input_key"]).with_suffix("")
    mask_dir.mkdir(parents=True)
    for concept, mask in masks.items():
        (mask_dir / f"{concept}.png").write_bytes(encode_mask(mask, Outline.EXACT))

    settings = Settings(_env_file=None, storage_local_dir=folder / "store", segmenter="files",
                        segmenter_masks_dir=folder / "masks", callback_backoff=[0.1])
    result = asyncio.run(build_pipeline(settings).run_job(job))
    (item,) = result.items
    if item.report.status != "done":
        raise SystemExit(f"the sample job failed: {item.report.error_code}: {item.report.error}")
    after = np.asarray(Image.open(folder / "store" / item.report.output_key).convert("RGB"))
    return rgb, after


def side_by_side(before: np.ndarray, after: np.ndarray, width: int) -> np.ndarray:
    """Both photos scaled to ``width`` together, labelled, with a gap between them."""
    gap = 8
    tile_w = (width - gap) // 2
    scale = tile_w / before.shape[1]
    size = (tile_w, round(before.shape[0] * scale))
    tiles = []
    for image, label in ((before, "before"), (after, "after")):
        tile = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (92, 30), (0, 0, 0), -1)
        cv2.putText(tile, label, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    sheet = np.full((size[1], tile_w * 2 + gap, 3), 255, np.uint8)
    sheet[:, :tile_w], sheet[:, tile_w + gap:] = tiles
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(1200, 900), metavar=("WIDTH", "HEIGHT"),
                        help="size the room is rendered and edited at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1400, help="width of the picture")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    configure_logging("error")
    with tempfile.TemporaryDirectory() as tmp:
        before, after = run_sample(*args.size, args.seed, Path(tmp))
    Image.fromarray(side_by_side(before, after, args.width)).save(args.out, quality=85, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

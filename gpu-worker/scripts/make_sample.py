"""Write the local demo's sample photo and the masks it was rendered with.

    python -m scripts.make_sample            # from gpu-worker/

- local_store/inputs/u_demo/job_demo/0.jpg: a 1600 x 1200 room from ``scenes.render_room``
  (JPEG quality 92), the input of ``sample.json``;
- samples/masks/inputs/u_demo/job_demo/0/{Concept}.png: its exact masks, 8-bit 0/255, marked
  ``Mask-Outline: exact`` (used as they are, not fitted), which the file segmenter serves when no
  SAM3 weights are present.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from devtools.scenes import render_room
from engine.segmenter import Outline
from engine.stored_masks import encode_mask

PACKAGE = Path(__file__).resolve().parent.parent

INPUT_KEY = "inputs/u_demo/job_demo/0.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rgb, masks = render_room(args.width, args.height, args.seed)
    photo = PACKAGE / "local_store" / INPUT_KEY
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(photo, quality=92, optimize=True)

    mask_dir = PACKAGE / "samples" / "masks" / Path(INPUT_KEY).with_suffix("")
    mask_dir.mkdir(parents=True, exist_ok=True)
    for stale in mask_dir.glob("*.png"):
        stale.unlink()
    for concept, mask in masks.items():
        (mask_dir / f"{concept}.png").write_bytes(encode_mask(mask, Outline.EXACT))
    print(f"{photo.relative_to(PACKAGE)}: {photo.stat().st_size // 1024} KiB, {args.width}x{args.height}")
    print(f"{mask_dir.relative_to(PACKAGE)}/: {', '.join(sorted(masks))}")


if __name__ == "__main__":
    main()

"""A learned inpainter in the remove slot: a model exported with ``torch.export`` (a ``.pt2`` file).

The program is called with LaMa's convention: ``program(image, mask)``, image float
1 x 3 x H x W in [0, 1], mask float 1 x 1 x H x W (1 = fill), returning 1 x 3 x H x W in [0, 1].
A program exported with dynamic height and width is run at the window's size, at most
``max_side`` on its long side, sides padded to a multiple of 8; one exported at a fixed size is
run at that size. The result is scaled back and used inside the hole only.

``choose_inpainter`` picks it when its file is present (``INPAINT_MODEL``, else
``$MODEL_CACHE_DIR/inpaint/lama.pt2``) and loads; otherwise the structure-aware fill
(engine/edits/structure_fill.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engine.edits.remove import Inpainter
from engine.edits.structure_fill import StructureInpainter

log = logging.getLogger(__name__)

DEFAULT_RELATIVE_PATH = Path("inpaint") / "lama.pt2"


def _static_size(program: Any) -> tuple[int, int] | None:
    """(height, width) of the image input when the program was exported at a fixed size."""
    first = program.graph_signature.user_inputs[0]
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == first:
            h, w = node.meta["val"].shape[-2:]
            return (h, w) if isinstance(h, int) and isinstance(w, int) else None
    return None


class ExportedInpainter:
    name = "torch-export"

    def __init__(self, path: Path, device: str | None = None, max_side: int = 1024) -> None:
        import torch
        from torch.export.passes import move_to_device_pass

        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        program = torch.export.load(str(path))
        program = move_to_device_pass(program, self.device)
        self.fixed = _static_size(program)
        self.module = program.module()
        self.max_side = max_side

    def _run_size(self, h: int, w: int) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        scale = min(1.0, self.max_side / max(h, w))
        return max(8, round(h * scale)), max(8, round(w * scale))

    def inpaint(self, rgb: np.ndarray, hole: np.ndarray, guide: np.ndarray | None = None) -> np.ndarray:
        torch = self.torch
        h, w = hole.shape
        sh, sw = self._run_size(h, w)
        resized = (sh, sw) != (h, w)
        img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if resized else rgb
        msk = cv2.resize(hole.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) if resized else hole
        ph, pw = ((-sh) % 8, (-sw) % 8) if self.fixed is None else (0, 0)
        img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_REFLECT)
        msk = cv2.copyMakeBorder(msk.astype(np.uint8), 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        with torch.no_grad():
            x = torch.from_numpy(img).to(self.device).permute(2, 0, 1)[None].float() / 255
            m = torch.from_numpy(msk).to(self.device)[None, None].float()
            y = self.module(x, m)[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        y = (y[:sh, :sw] * 255 + 0.5).astype(np.uint8)
        if resized:
            y = cv2.resize(y, (w, h), interpolation=cv2.INTER_CUBIC)
        out = rgb.copy()
        out[hole] = y[hole]
        return out


def learned_weights_path(explicit: Path | None, model_cache_dir: Path) -> Path | None:
    """``explicit`` (``INPAINT_MODEL``), else ``model_cache_dir/inpaint/lama.pt2``, when that file exists."""
    path = explicit or model_cache_dir / DEFAULT_RELATIVE_PATH
    return path if path.is_file() else None


def choose_inpainter(explicit: Path | None, model_cache_dir: Path) -> Inpainter:
    """The learned inpainter when its program is present and loads, else ``StructureInpainter``."""
    path = learned_weights_path(explicit, model_cache_dir)
    if path is not None:
        try:
            return ExportedInpainter(path)
        except Exception as exc:  # an unloadable program must not take the worker down
            log.warning("inpaint.learned_unavailable", extra={"path": str(path), "reason": str(exc)[:200]})
    return StructureInpainter()

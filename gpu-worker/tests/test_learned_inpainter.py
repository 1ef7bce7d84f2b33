"""The learned-inpainter slot loads a ``torch.export`` program (.pt2) and runs it on a removal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.actions.remove import Remove
from engine.applier import Edit, apply_edits_with
from engine.edits.learned import ExportedInpainter, choose_inpainter
from engine.edits.structure_fill import StructureInpainter

torch = pytest.importorskip("torch")


class MeanFill(torch.nn.Module):
    """Stands in for LaMa: fills the hole with the mean known colour."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = 1 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True)
        return image * known + mean * mask


def _export(path, dynamic: bool, size: tuple[int, int] = (64, 96)) -> None:
    h, w = size
    args = (torch.rand(1, 3, h, w), (torch.rand(1, 1, h, w) > 0.5).float())
    shapes = None
    if dynamic:
        hd, wd = torch.export.Dim("h", min=8, max=4096), torch.export.Dim("w", min=8, max=4096)
        shapes = {"image": {2: hd, 3: wd}, "mask": {2: hd, 3: wd}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(MeanFill(), args, dynamic_shapes=shapes), str(path))


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    img = np.clip(rng.normal(120, 25, (120, 160, 3)), 0, 255).astype(np.uint8)
    img[:, :, 0] = np.linspace(60, 200, 160, dtype=np.uint8)[None, :]  # a gradient: the mean is not any pixel
    hole = np.zeros((120, 160), bool)
    hole[40:80, 50:110] = True
    return img, hole


def test_default_path_loads_a_pt2_program_and_fills_the_hole_with_it(tmp_path):
    _export(tmp_path / "inpaint" / "lama.pt2", dynamic=True)
    assert isinstance(choose_inpainter(None, tmp_path / "elsewhere"), StructureInpainter)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the loader uses no deprecated torch API
        inpainter = choose_inpainter(None, tmp_path)  # found at MODEL_CACHE_DIR/inpaint/lama.pt2
    assert isinstance(inpainter, ExportedInpainter) and inpainter.fixed is None
    img, hole = _scene()
    out = apply_edits_with(img, [Edit(Remove(), hole)], None, inpainter=inpainter)
    inner = np.zeros_like(hole)
    inner[44:76, 54:106] = True  # inside the hole and its grown rim, the program's mean colour
    expected = img[~hole].reshape(-1, 3).mean(axis=0)
    assert np.abs(out[inner].astype(float).mean(axis=0) - expected).max() < 4
    assert out[inner].astype(float).std(axis=0).max() < 3  # one flat colour, not a patch copy
    far = np.ones_like(hole)
    far[30:90, 40:120] = False
    assert np.array_equal(out[far], img[far])


def test_explicit_path_and_fixed_size_program(tmp_path):
    path = tmp_path / "models" / "fixed.pt2"
    _export(path, dynamic=False, size=(48, 48))
    inpainter = choose_inpainter(path, tmp_path / "elsewhere")  # INPAINT_MODEL
    assert isinstance(inpainter, ExportedInpainter) and inpainter.fixed == (48, 48)
    img, hole = _scene()
    filled = inpainter.inpaint(img, hole)
    assert np.array_equal(filled[~hole], img[~hole])
    expected = img[~hole].reshape(-1, 3).mean(axis=0)
    assert np.abs(filled[hole].astype(float).mean(axis=0) - expected).max() < 6


def test_missing_or_unloadable_program_falls_back_to_the_structure_fill(tmp_path):
    assert isinstance(choose_inpainter(tmp_path / "missing.pt2", tmp_path), StructureInpainter)
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"not a program")
    assert isinstance(choose_inpainter(broken, tmp_path), StructureInpainter)

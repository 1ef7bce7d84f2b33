"""Actions are decided once, in engine/actions/: the message schema, the rules and the applier
read the registry, so an action defined here, in a test, runs through a whole job."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from engine.actions import ACTIONS, Action, Before, Tools, register
from engine.actions.recolor import Recolor
from engine.applier import Edit, apply_edits
from devtools.scenes import render_room
from engine.callback import RecordingCallbackSender
from engine.edits.colour import LUMA
from engine.errors import InvalidMessage
from engine.job import parse_job
from engine.pipeline import Pipeline
from engine.rules import make_plan
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from presets import Preset
from tests.conftest import decode_png, jpeg_bytes, make_job, make_settings, room_photo, write_masks

ENGINE = Path(__file__).resolve().parents[1] / "engine"


class GreyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    amount: float = Field(ge=0, le=1)


@dataclass(frozen=True)
class Grey:
    action: ClassVar[str] = "grey"
    amount: float


class GreyAction(Action):
    """Takes the colour out of a region, by ``amount``."""

    name = "grey"
    value_type = GreyParams
    value_help = "needs {\"amount\": 0..1}"

    def resolve(self, value: GreyParams, preset: Preset, concept: str) -> Grey:
        if concept not in preset.concepts:
            raise InvalidMessage(f"concepts.{concept}: not in {preset.name}")
        return Grey(value.amount)

    def edit(self, op: Grey, rgb: np.ndarray, alpha: np.ndarray, region: np.ndarray, band: int,
             tools: Tools, before: Before[np.ndarray]) -> np.ndarray:
        px = rgb[alpha > 0].astype(np.float32)
        grey = (px @ LUMA)[:, None]
        return px + (grey - px) * op.amount


@pytest.fixture
def grey(monkeypatch):
    action = GreyAction()
    monkeypatch.setitem(ACTIONS, action.name, action)
    return action


class WeighedGrey(GreyAction):
    """``GreyAction`` keeping the weights each of its edits was given."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[np.ndarray] = []

    def edit(self, op, rgb, alpha, region, band, tools, before):
        self.weights.append(alpha.copy())
        return super().edit(op, rgb, alpha, region, band, tools, before)


def test_an_edits_soft_edge_is_weighed_on_the_photo_not_on_the_edits_before_it(monkeypatch):
    """The furniture's soft edge is the same whether the wall behind it was painted navy first
    or not: how much of a pixel is furniture is the photo's to say. (Weighed on the painted wall, it
    would follow the paint, and the two editors, whose paint is a level apart here and there,
    would weigh it differently.)"""
    weighed = WeighedGrey()
    monkeypatch.setitem(ACTIONS, weighed.name, weighed)
    rgb, masks = render_room(480, 360, seed=3)
    navy = Recolor((20, 30, 80))
    alone = apply_edits(rgb, [Edit(Grey(1.0), masks["Furniture"])], None)
    after_paint = apply_edits(rgb, [Edit(navy, masks["Wall"]), Edit(Grey(1.0), masks["Furniture"])], None)
    first, second = weighed.weights
    assert np.array_equal(first, second)
    soft = (first > 0) & (first < 1)
    assert soft.sum() > 100  # the furniture's outline against the wall has a soft edge to compare
    assert not np.array_equal(alone, after_paint)


def test_the_built_in_actions_are_registered_from_their_modules():
    assert {"recolor", "tone", "remove"} <= set(ACTIONS)
    for name, action in ACTIONS.items():
        assert action.name == name and (ENGINE / "actions" / f"{name}.py").is_file()


def test_an_action_unknown_to_the_registry_is_refused_with_the_known_ones_named():
    with pytest.raises(InvalidMessage, match="grey.*use one of recolor, remove, tone"):
        parse_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 1}}}))


def test_registering_twice_under_one_name_is_refused(grey):
    assert register(grey) is grey  # the same object again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register(GreyAction())


def test_the_actions_own_model_validates_its_value(grey):
    with pytest.raises(InvalidMessage, match="grey needs .*amount"):
        parse_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 2}}}))
    with pytest.raises(InvalidMessage, match="grey needs"):
        parse_job(make_job(concepts={"Wall": {"action": "grey"}}))
    job = parse_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 0.5}}}))
    assert job.concepts["Wall"].value == GreyParams(amount=0.5)
    other = parse_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 0.6}}}))
    assert job.item_fingerprint(job.items[0]) != other.item_fingerprint(other.items[0])  # the value is in it
    assert make_plan(job).rules[0].op == Grey(0.5)


def test_a_new_action_in_one_place_runs_through_parse_plan_and_apply(grey):
    rgb, masks = room_photo()
    job = parse_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 1.0}},
                                       "Floor": {"action": "tone", "value": "warm"}}))
    plan = make_plan(job)
    edits = [Edit(rule.op, masks[rule.concept]) for rule in plan.rules]
    protect = masks["Frame_Molding"] | masks["Window"]
    out = apply_edits(rgb, edits, protect)
    wall = masks["Wall"]
    core = wall & (np.arange(rgb.shape[0])[:, None] < 80)
    spread = out[core].astype(int).max(axis=1) - out[core].astype(int).min(axis=1)
    assert spread.max() <= 1  # grey: channels equal, up to rounding
    assert (rgb[core].astype(int)[:, 0] - rgb[core].astype(int)[:, 2]).mean() > 20  # it was beige
    assert np.array_equal(out[protect], rgb[protect])


async def test_a_new_action_runs_in_a_whole_job(grey, tmp_path):
    settings = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))
    storage = LocalStorage(settings.storage_local_dir)
    rgb, masks = room_photo()
    storage._put("inputs/u_abc/job_123/0.jpg", jpeg_bytes(rgb), "image/jpeg", {})
    write_masks(tmp_path / "masks", "inputs/u_abc/job_123/0.jpg", masks)
    callbacks = RecordingCallbackSender()
    pipeline = Pipeline(settings, storage, FileMaskSegmenter(tmp_path / "masks"), callbacks)
    result = await pipeline.run_job(make_job(concepts={"Wall": {"action": "grey", "value": {"amount": 1.0}}}))
    report = result.items[0].report
    assert report.status == "done", report
    out = decode_png(storage.path_of(report.output_key).read_bytes())
    inner = masks["Wall"] & (np.arange(rgb.shape[0])[:, None] < 15)
    assert (out[inner].astype(int).max(axis=1) - out[inner].astype(int).min(axis=1)).max() <= 1


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_edit_algorithms_do_not_import_the_message_or_the_rules():
    for path in sorted((ENGINE / "edits").glob("*.py")):
        bad = {m for m in _imports(path) if m in ("engine.job", "engine.rules") or m.startswith("engine.actions")}
        assert not bad, f"{path.name} imports {bad}"

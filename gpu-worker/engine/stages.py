"""What each job stage does, decided once: a ``StageRecipe`` per stage.

    stage    masks from       writes, in order (the marker last)              reports
    full     the segmenter    masks, instances file, preview, result (marker)  result, masks, instances
    segment  the segmenter    masks, instances file (marker)                   masks, instances
    apply    stored masks     preview, result (marker)                        result, masks used,
                                                                              instances if a rule names them

The marker is written last with the item's fingerprint in its metadata: its presence with the
same fingerprint means every object of the item is stored (redelivery reuses it, contract
section 6). A report is built from the job and its plan, never read back from storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidMessage
from engine.job import Item, Job, instances_key, mask_key
from engine.report import ItemReport
from engine.rules import Plan, make_plan
from presets import Concept

PNG = "image/png"
JPEG = "image/jpeg"
JSON = "application/json"

StoredObject = tuple[str, bytes, str, "dict[str, str] | None"]  # key, data, content type, metadata


@dataclass
class Encoded:
    """The bytes an item writes; what a stage does not write stays None/empty."""

    masks: dict[str, bytes] = field(default_factory=dict)  # concept -> 0/255 PNG
    instances: bytes | None = None
    result: bytes | None = None  # PNG
    preview: bytes | None = None  # JPEG


@dataclass(frozen=True)
class StageRecipe:
    name: str
    needs_rules: bool  # the job must name at least one concept rule
    segments: bool  # masks from the segmenter; otherwise the ones a segment/full job stored
    writes_masks: bool  # a mask PNG per concept and the instances file
    renders: bool  # the edited result PNG and its preview JPEG

    def marker(self, job: Job, item: Item) -> str:
        return item.output_key if self.renders else instances_key(job, item.idx)

    def loads_instances(self, plan: Plan) -> bool:
        """Stored masks only: the instances file is read when a rule names instances."""
        return not self.segments and names_instances(plan)

    def objects(self, job: Job, item: Item, encoded: Encoded, marker_meta: dict[str, str]) -> list[StoredObject]:
        objects: list[StoredObject] = []
        if self.writes_masks:
            objects += [(mask_key(job, item.idx, name), data, PNG, None) for name, data in encoded.masks.items()]
            objects.append((instances_key(job, item.idx), _present(encoded.instances), JSON, None))
        if self.renders:
            objects.append((item.preview_key, _present(encoded.preview), JPEG, None))
            objects.append((item.output_key, _present(encoded.result), PNG, None))
        key, data, content_type, _ = objects[-1]
        objects[-1] = (key, data, content_type, marker_meta)
        return objects

    def report(self, job: Job, plan: Plan, item: Item) -> ItemReport:
        with_instances = self.writes_masks or names_instances(plan)
        return ItemReport(
            idx=item.idx, status="done",
            output_key=item.output_key if self.renders else None,
            preview_key=item.preview_key if self.renders else None,
            mask_keys={c.name: mask_key(job, item.idx, c.name) for c in plan.concepts_to_find()},
            instances_key=instances_key(job, item.idx) if with_instances else None,
        )


RECIPES: dict[str, StageRecipe] = {
    "full": StageRecipe("full", needs_rules=True, segments=True, writes_masks=True, renders=True),
    "segment": StageRecipe("segment", needs_rules=False, segments=True, writes_masks=True, renders=False),
    "apply": StageRecipe("apply", needs_rules=True, segments=False, writes_masks=False, renders=True),
}


def names_instances(plan: Plan) -> bool:
    return any(rule.instances is not None for rule in plan.rules)


def _present(data: bytes | None) -> bytes:
    if data is None:  # pragma: no cover - the pipeline encodes what the recipe writes
        raise ValueError("an object the stage writes was not encoded")
    return data


@dataclass(frozen=True)
class PlannedJob:
    """A parsed job with its rules resolved and its stage's recipe."""

    job: Job
    plan: Plan
    recipe: StageRecipe

    @property
    def concepts(self) -> list[Concept]:
        return self.plan.concepts_to_find()

    def fingerprint(self, item: Item, params: dict[str, Any] | None = None) -> str:
        """``Job.item_fingerprint``: ``params`` are the worker's settings that shape the objects."""
        return self.job.item_fingerprint(item, params)


def plan_job(job: Job) -> PlannedJob:
    """``InvalidMessage`` when the rules do not resolve or the stage needs rules it lacks."""
    recipe = RECIPES[job.stage]
    plan = make_plan(job)
    if recipe.needs_rules and not plan.rules:
        raise InvalidMessage("concepts is empty: nothing to apply")
    return PlannedJob(job, plan, recipe)

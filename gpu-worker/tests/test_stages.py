"""Each stage's recipe: what it writes, in which order (its marker last), and what it reports."""

from __future__ import annotations

import pytest

from engine.errors import InvalidMessage
from engine.job import parse_job
from engine.stages import RECIPES, Encoded, plan_job
from tests.conftest import make_job
from tests.jobs_doubles import pipeline_on

CONCEPTS = ("Wall", "Floor", "Frame_Molding", "Window")
MASKS = [f"masks/u_abc/job_123/0_{c}.png" for c in CONCEPTS]
INSTANCES = "masks/u_abc/job_123/0_instances.json"
OUTPUT, PREVIEW = "outputs/u_abc/job_123/0_result.png", "previews/u_abc/job_123/0_thumb.jpg"


@pytest.mark.parametrize("stage,written,marker", [
    ("full", {*MASKS, INSTANCES, PREVIEW, OUTPUT}, OUTPUT),
    ("segment", {*MASKS, INSTANCES}, INSTANCES),
])
async def test_each_stage_writes_its_objects_with_the_marker_last(tmp_path, stage, written, marker):
    pipeline, storage, sender = pipeline_on(tmp_path)
    result = await pipeline.run_job(make_job(stage=stage))
    assert result.status == "completed"
    keys = storage.keys()
    assert set(keys) == written and len(keys) == len(written)
    assert keys[-1] == marker
    metas = {key: meta for key, meta, _ in storage.writes}
    assert set(metas[marker]) == {"fingerprint"}, "only the marker carries the fingerprint"
    assert all(meta is None for key, meta in metas.items() if key != marker)


async def test_apply_writes_only_the_result_and_preview_and_reports_the_masks_it_used(tmp_path):
    pipeline, storage, sender = pipeline_on(tmp_path)
    await pipeline.run_job(make_job(stage="segment"))
    before = len(storage.writes)
    result = await pipeline.run_job(make_job(stage="apply"))
    assert result.status == "completed"
    assert storage.keys()[before:] == [PREVIEW, OUTPUT]
    payload = sender.sent[-1][1]
    assert payload["mask_keys"] == dict(zip(CONCEPTS, MASKS))
    assert payload["instances_key"] is None, "no rule names instances: the instances file was not read"
    assert (payload["output_key"], payload["preview_key"]) == (OUTPUT, PREVIEW)


async def test_apply_naming_instances_reports_the_instances_file(tmp_path):
    pipeline, storage, sender = pipeline_on(tmp_path)
    await pipeline.run_job(make_job(stage="segment"))
    job = make_job(stage="apply", concepts={"Wall": {"action": "recolor", "value": "#2040A0", "instances": [0]}})
    result = await pipeline.run_job(job)
    assert result.status == "completed"
    assert sender.sent[-1][1]["instances_key"] == INSTANCES


@pytest.mark.parametrize("stage", ["full", "segment", "apply"])
async def test_a_redelivered_item_reports_what_the_first_run_reported(tmp_path, stage):
    pipeline, storage, sender = pipeline_on(tmp_path)
    if stage == "apply":
        await pipeline.run_job(make_job(stage="segment"))
    first = await pipeline.run_job(make_job(stage=stage))
    writes = len(storage.writes)
    again = await pipeline.run_job(make_job(stage=stage))
    assert len(storage.writes) == writes, "nothing rewritten"
    assert again == first and sender.sent[-1][1] == sender.sent[-2][1]


def test_recipes_cover_every_stage_and_a_stage_needing_rules_refuses_none():
    assert set(RECIPES) == {"full", "segment", "apply"}
    assert plan_job(parse_job(make_job(stage="segment", concepts={}))).plan.rules == ()
    for stage in ("full", "apply"):
        with pytest.raises(InvalidMessage, match="nothing to apply"):
            plan_job(parse_job(make_job(stage=stage, concepts={})))


def test_objects_put_the_marker_last_with_its_metadata():
    planned = plan_job(parse_job(make_job()))
    item = planned.job.items[0]
    encoded = Encoded(masks={"Wall": b"w"}, instances=b"i", result=b"r", preview=b"p")
    objects = planned.recipe.objects(planned.job, item, encoded, {"fingerprint": "f"})
    assert [o[0] for o in objects] == ["masks/u_abc/job_123/0_Wall.png", INSTANCES, PREVIEW, OUTPUT]
    assert objects[-1][3] == {"fingerprint": "f"} and all(o[3] is None for o in objects[:-1])

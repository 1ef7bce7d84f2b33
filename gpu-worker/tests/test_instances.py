"""Instances keep their masks cropped and bit-packed; what goes in comes back out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.callback import RecordingCallbackSender
from engine.errors import MasksNotFound
from engine.stored_masks import decode_instances, encode_instances
from engine.segmenter import ConceptMasks, Instance, bbox_of
from tests.conftest import make_job
from tests.test_pipeline import build


@settings(max_examples=80, deadline=None)
@given(height=st.integers(1, 30), width=st.integers(1, 30), density=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_a_mask_comes_back_exactly(height, width, density, seed):
    mask = np.random.default_rng(seed).random((height, width)) < density
    inst = Instance(3, 0.5, bbox_of(mask), mask)
    assert inst.mask.dtype == np.bool_ and np.array_equal(inst.mask, mask)
    assert inst.area == int(mask.sum())
    x0, y0, x1, y1 = inst.bbox
    assert np.array_equal(inst.crop, mask[y0:y1, x0:x1])


def test_a_12_mp_blob_is_held_in_a_fraction_of_its_bool_size():
    mask = np.zeros((3000, 4000), bool)
    mask[1000:1600, 500:1700] = True
    inst = Instance(0, 0.9, bbox_of(mask), mask)
    assert inst._bits.nbytes < mask.nbytes / 100


def test_a_box_that_does_not_hold_the_mask_is_refused():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    with pytest.raises(ValueError, match="outside its box"):
        Instance(0, 1.0, (2, 2, 4, 4), mask)


def test_the_instances_file_round_trips_and_a_lying_box_is_unreadable():
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:25] = True
    segmentation = {"Door": ConceptMasks("Door", mask, [Instance(0, 0.8, bbox_of(mask), mask)])}
    data = encode_instances(segmentation, (30, 20))
    back = decode_instances(data, (30, 20))["Door"][0]
    assert back.bbox == (10, 4, 25, 9) and np.array_equal(back.mask, mask)
    doc = json.loads(data)
    doc["concepts"]["Door"][0]["bbox"] = [0, 0, 5, 5]
    with pytest.raises(MasksNotFound):
        decode_instances(json.dumps(doc).encode(), (30, 20))


async def test_apply_with_a_tampered_instances_file_fails_with_masks_not_found(tmp_path):
    pipeline, storage, _, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    concepts = {"Furniture": {"action": "recolor", "value": "#FF0000", "instances": [0]}}
    await pipeline.run_job(make_job(stage="segment", concepts=concepts))
    key = "masks/u_abc/job_123/0_instances.json"
    doc = json.loads(storage.path_of(key).read_bytes())
    doc["concepts"]["Furniture"][0]["bbox"] = [0, 0, 1, 1]
    storage.path_of(key).write_text(json.dumps(doc))
    result = (await pipeline.run_job(make_job(stage="apply", concepts=concepts, protect=[]))).to_dict()
    assert result["items"][0]["error_code"] == "MASKS_NOT_FOUND"


def rle_reference(mask: np.ndarray) -> list[int]:
    """The format's definition, over the whole image: alternating runs, zeros first."""
    flat = mask.reshape(-1).astype(np.int8)
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


@settings(max_examples=120, deadline=None)
@given(height=st.integers(1, 25), width=st.integers(1, 25), density=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_run_lengths_from_the_box_match_the_whole_image_definition(height, width, density, seed):
    from engine.stored_masks import rle_decode, rle_encode_box

    mask = np.random.default_rng(seed).random((height, width)) < density
    inst = Instance(0, 1.0, bbox_of(mask), mask)
    runs = rle_encode_box(inst.crop, inst.bbox, (width, height))
    assert runs == rle_reference(mask)
    assert np.array_equal(rle_decode(runs, width, height), mask)


def test_a_speckled_mask_splits_into_its_components_quickly_and_exactly():
    import cv2

    from engine.segmenter import instances_from_union

    union = np.random.default_rng(4).random((1500, 2000)) < 0.003
    union[100:400, 200:900] = True
    instances = instances_from_union(union, multi_instance=True)
    count, labels = cv2.connectedComponents(union.astype(np.uint8), connectivity=8)
    assert len(instances) == count - 1 > 5000
    assert sum(i.area for i in instances) == int(union.sum())
    for inst in instances[::500]:
        assert np.array_equal(inst.mask, labels == inst.id + 1) and inst.bbox == bbox_of(inst.mask)


def test_many_instances_round_trip_through_the_file_box_by_box():
    from engine.segmenter import instances_from_union

    union = np.random.default_rng(5).random((300, 400)) < 0.01
    union[:, -3:] = True  # runs that wrap from one row's end to the next row's start
    instances = instances_from_union(union, multi_instance=True)
    data = encode_instances({"Grout": ConceptMasks("Grout", union, instances)}, (400, 300))
    back = decode_instances(data, (400, 300))["Grout"]
    assert len(back) == len(instances) > 100
    for a, b in zip(instances, back):
        assert a.bbox == b.bbox and a.area == b.area and np.array_equal(a.crop, b.crop)


@pytest.mark.parametrize("entry", [
    {"bbox": [0, 0, 2, 2], "rle": [0, 5, 95]},         # ones beyond the box's rows
    {"bbox": [0, 0, 2, 1], "rle": [3, 2, 95]},         # ones beyond the box's columns
    {"bbox": [0, 0, 10, 10], "rle": [10, 10]},          # runs that do not cover the image
    {"bbox": [0, 0, 11, 10], "rle": [100]},             # a box outside the image
    {"bbox": [0, 0, 10, 10], "rle": [50, -10, 60]},     # a negative run
])
def test_malformed_instances_are_refused(entry):
    doc = {"width": 10, "height": 10, "concepts": {"Door": [{"id": 0, "score": 0.5, "area": 1, **entry}]}}
    with pytest.raises(MasksNotFound):
        decode_instances(json.dumps(doc).encode(), (10, 10))

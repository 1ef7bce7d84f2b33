"""Fault-matrix cases for masks stored between stages: an ``apply`` job reading back mask PNGs
and an instances file that may be malformed or hostile. Every case ends ``MASKS_NOT_FOUND``
with one terminal callback, and no result is written."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from engine.errors import MasksNotFound
from engine.png import chunk
from engine.storage import LocalStorage
from engine.stored_masks import (MAX_INSTANCES, MAX_INSTANCES_FILE_BYTES, decode_instances, decode_mask,
                                 encode_mask, rle_decode_box)
from tests.test_fault_matrix import OUTPUT, Case, encoded, photo, run_case

W, H = 64, 48
MASKS = "masks/u_abc/job_123/0_"
INSTANCES = MASKS + "instances.json"
BY_INSTANCE = {"Wall": {"action": "recolor", "value": "#2040A0", "instances": [0]}}


def top_half() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[: H // 2] = True
    return mask


def stored(objects: dict[str, bytes]):
    """A local store holding ``objects`` (stored masks of the photo's idx 0) before the job runs."""
    def make(root: Path) -> LocalStorage:
        storage = LocalStorage(root)
        for key, data in objects.items():
            storage._put(key, data, "application/octet-stream", {})
        return storage
    return make


def masks(wall: bytes | None = None, instances: bytes | None = None) -> dict[str, bytes]:
    objects = {MASKS + "Wall.png": wall if wall is not None else encode_mask(top_half()),
               MASKS + "Floor.png": encode_mask(~top_half()),
               MASKS + "Window.png": encode_mask(np.zeros((H, W), bool))}
    if instances is not None:
        objects[INSTANCES] = instances
    return objects


def instances_file(entries: object, **doc: object) -> bytes:
    return json.dumps({"width": W, "height": H, "concepts": {"Wall": entries}, **doc}).encode()


def full_frame(count: int) -> list[dict]:
    return [{"id": i, "score": 0.9, "bbox": [0, 0, W, H], "area": W * H, "rle": [0, W * H]} for i in range(count)]


def wall_instance(**fields: object) -> dict:
    entry = {"id": 0, "score": 0.9, "bbox": [0, 0, W, H // 2], "area": W * H // 2, "rle": [0, W * H // 2, W * H // 2]}
    entry.update(fields)
    return entry


def bad_chunk(png: bytes) -> bytes:
    """``png`` with its pixel data split in two and a chunk of no valid type between the halves:
    Pillow opens it and fails while decoding the pixels."""
    at = png.index(b"IDAT")
    length = struct.unpack(">I", png[at - 4:at])[0]
    pixels = png[at + 4:at + 4 + length]
    return b"".join([png[:at - 4], chunk(b"IDAT", pixels[:10]), chunk(b"\x00\x01\x02\x03", b"x"),
                     chunk(b"IDAT", pixels[10:]), chunk(b"IEND", b"")])


def padded(data: bytes, size: int) -> bytes:
    return data[:-1] + b" " * (size - len(data)) + data[-1:]


APPLY = {"stage": "apply"}
APPLY_BY_INSTANCE = {"stage": "apply", "concepts": BY_INSTANCE}

CASES = [
    Case("stored_mask_bad_png_chunk", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY,
         storage=stored(masks(wall=bad_chunk(encode_mask(top_half()))))),
    Case("stored_mask_truncated_zlib", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY,
         storage=stored(masks(wall=encode_mask(top_half())[:60] + zlib.compress(b"\x00" * 10)[:4]))),
    Case("stored_mask_wrong_size", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY,
         storage=stored(masks(wall=encode_mask(np.ones((H + 1, W), bool))))),
    Case("instances_file_empty_list", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=b"[]"))),
    Case("instances_concepts_as_list", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=json.dumps({"width": W, "height": H, "concepts": [wall_instance()]})
                              .encode()))),
    Case("instances_run_length_1e30", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=instances_file([wall_instance(rle=[0, 1e30, 0])])))),
    Case("instances_run_length_huge_integer", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=instances_file([wall_instance(rle=[2**64 - W * H // 2, W * H // 2, W * H])])))),
    Case("instances_deeply_nested", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=b'{"width": 64, "height": 48, "concepts": ' + b"[" * 100_000 + b"]" * 100_000
                              + b"}"))),
    Case("instances_not_json", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=b"\xff\xfe not json"))),
    Case("instances_id_not_a_number", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=instances_file([wall_instance(id={"x": 1})])))),
    # Memory bounds, checked before any mask is decoded: each case below is a well-formed file
    # that decodes on a tiny photo, but scales with the photo to gigabytes.
    Case("instances_thousand_full_frame", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=instances_file(full_frame(1000))))),
    Case("instances_over_count_limit", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=instances_file(
             [wall_instance()] + [{"id": i, "score": 0.5, "bbox": [0, 0, 0, 0], "area": 0, "rle": [W * H]}
                                  for i in range(1, MAX_INSTANCES + 1)])))),
    Case("instances_file_over_byte_limit", "MASKS_NOT_FOUND", encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
         storage=stored(masks(instances=padded(instances_file([wall_instance()]), MAX_INSTANCES_FILE_BYTES + 1)))),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_stored_mask_faults(tmp_path, case):
    result, storage, sender, _ = await run_case(tmp_path, case)
    (item,) = result["items"]
    assert (item["status"], item["error_code"]) == ("failed", case.code), item
    assert [p["error_code"] for _, p, _ in sender.sent] == [case.code]
    assert "Traceback" not in item["error"] and str(storage.root) not in item["error"]
    assert not storage.path_of(OUTPUT).exists()


async def test_the_same_files_within_bounds_are_applied(tmp_path):
    """The control for the cases above: a well-formed instances file, and 64 full-frame instances
    (the area bound exactly), are read and the named instance recoloured."""
    for entries in ([wall_instance()], full_frame(64)):
        case = Case("control", None, encoded(photo(), "PNG"), job=APPLY_BY_INSTANCE,
                    storage=stored(masks(instances=instances_file(entries))))
        result, storage, _, _ = await run_case(tmp_path / str(len(entries)), case)
        assert result["items"][0]["status"] == "done", result
        assert storage.path_of(OUTPUT).exists()


def test_decoders_raise_masks_not_found_never_return_none():
    with pytest.raises(MasksNotFound):
        decode_mask(b"not a png", (W, H))
    with pytest.raises(MasksNotFound, match="nested too deeply"):
        decode_instances(b"[" * 100_000 + b"]" * 100_000, (W, H))
    with pytest.raises(MasksNotFound, match="images' worth"):
        decode_instances(instances_file(full_frame(65)), (W, H))
    assert decode_mask(encode_mask(top_half()), (W, H))[0].sum() == W * H // 2


def test_box_decoding_holds_one_byte_per_pixel_of_the_box_rows():
    width, height = 4000, 3000
    runs = [1000 * width, 600 * width, (height - 1600) * width]
    crop = rle_decode_box(runs, (0, 1000, width, 1600), (width, height))
    assert crop.shape == (600, width) and crop.all()
    with pytest.raises(ValueError, match="outside its box"):
        rle_decode_box(runs, (0, 1000, width, 1599), (width, height))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=16,
)
entry_fields = st.fixed_dictionaries({}, optional={"id": json_values, "score": json_values, "bbox": json_values,
                                                   "rle": json_values | st.lists(st.integers(-2, 2 * W * H), max_size=5)})


@hsettings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"width": st.just(W), "height": st.just(H),
                                                      "concepts": st.dictionaries(st.text(max_size=4),
                                                                                  st.lists(entry_fields, max_size=3))})))
def test_any_json_is_instances_or_masks_not_found(doc):
    try:
        found = decode_instances(json.dumps(doc).encode(), (W, H))
    except MasksNotFound:
        return
    assert all(isinstance(i.crop, np.ndarray) for v in found.values() for i in v)

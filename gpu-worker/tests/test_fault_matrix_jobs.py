"""Fault-matrix cases for what a job names: keys every store can hold (or ``INVALID_KEY`` before
any storage call), redeliveries that reuse a result only when it is the same result under the
same keys, and items that would overwrite each other (``INVALID_MESSAGE``)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.callback import RecordingCallbackSender
from engine.errors import StorageError
from engine.job import MAX_KEY_BYTES, MAX_SEGMENT_BYTES, Item, check_item_keys, parse_job
from engine.storage import LocalStorage
from tests.conftest import decode_png, make_job
from tests.test_bad_messages import pipeline as counting_pipeline
from tests.test_pipeline import build

PREFIX = "outputs/u_abc/job_123/"
NAME_254 = "é" * 127  # 254 bytes in UTF-8, 127 characters

KEY_CASES = {
    "key_lone_surrogate": PREFIX + "\ud800.png",
    "key_segment_over_255_bytes": PREFIX + "é" * 128 + ".png",
    "key_c1_control": PREFIX + "0\x85.png",
    "key_format_character": PREFIX + "0\u202egnp.png",
    "key_zero_width_character": PREFIX + "0\u200b.png",
    "key_line_separator": PREFIX + "0\u2028.png",
    "key_over_1024_utf8_bytes": PREFIX + "/".join([NAME_254] * 4) + ".png",  # 1046 bytes, 530 characters
}


@pytest.mark.parametrize("name", list(KEY_CASES))
async def test_keys_no_store_can_hold_fail_with_invalid_key_before_any_storage_call(tmp_path, name):
    p, sender, storage = counting_pipeline(tmp_path)
    job = make_job(1)
    job["items"][0]["output_key"] = KEY_CASES[name]
    result = (await p.run_job(job)).to_dict()
    assert result["items"][0]["error_code"] == "INVALID_KEY", result
    assert storage.calls == []
    assert [payload["error_code"] for _, payload, _ in sender.sent] == ["INVALID_KEY"]


def test_the_limits_count_utf8_bytes_and_accept_what_fits():
    job = parse_job(make_job())
    fits = PREFIX + "/".join([NAME_254] * 3) + "/" + "a" * (MAX_KEY_BYTES - len(PREFIX.encode()) - 3 * 255)
    assert len(fits.encode()) == MAX_KEY_BYTES and max(len(s.encode()) for s in fits.split("/")) <= MAX_SEGMENT_BYTES
    item = Item(idx=0, input_key="inputs/u_abc/job_123/0.jpg", output_key=fits,
                preview_key="previews/u_abc/job_123/ünïcödé 0.jpg")
    check_item_keys(job, item)


def test_local_store_turns_filesystem_errors_into_storage_errors(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    storage._put("outputs/u/j/0.png", b"x", "text/plain", {})  # the folder exists: the name itself is refused
    long_key = "outputs/u/j/" + "a" * 300
    for call in (lambda: storage._head(long_key), lambda: storage._put(long_key, b"x", "text/plain", {}),
                 lambda: storage._get(long_key, 100), lambda: storage._put("outputs/\ud800", b"x", "text/plain", {})):
        with pytest.raises(StorageError):
            call()
    with pytest.raises(StorageError, match="reserved"):
        storage._put(".meta/outputs/x", b"x", "text/plain", {})


def test_local_store_metadata_never_collides_with_another_keys(tmp_path):
    storage = LocalStorage(tmp_path / "store")
    keys = ["outputs/u/j/a", "outputs/u/j/a.json/b", "outputs/u/j/c.json", "outputs/u/j/c"]
    for i, key in enumerate(keys):
        storage._put(key, str(i).encode(), "text/plain", {"n": str(i)})
    assert [storage._head(key) for key in keys] == [{"n": str(i)} for i in range(len(keys))]
    assert [storage._get(key, 10) for key in keys] == [str(i).encode() for i in range(len(keys))]


# -- redelivery ----------------------------------------------------------------------------------

def overlapping(tmp_path):
    """Wall and Floor masks that both cover the whole photo: the rule applied last wins."""
    from PIL import Image

    folder = tmp_path / "masks" / "inputs" / "u_abc" / "job_123" / "0"
    for name in ("Wall", "Floor"):
        Image.fromarray(np.full((160, 240), 255, np.uint8)).save(folder / f"{name}.png")


async def test_redelivery_with_the_rules_reordered_is_new_work(tmp_path):
    pipeline, storage, segmenter, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    overlapping(tmp_path)
    red_then_blue = {"Wall": {"action": "recolor", "value": "#C02020"}, "Floor": {"action": "recolor", "value": "#2020C0"}}
    blue_then_red = dict(reversed(list(red_then_blue.items())))
    await pipeline.run_job(make_job(concepts=red_then_blue))
    first = decode_png(storage.path_of(PREFIX + "0_result.png").read_bytes()).astype(int)
    await pipeline.run_job(make_job(concepts=blue_then_red))
    second = decode_png(storage.path_of(PREFIX + "0_result.png").read_bytes()).astype(int)
    assert segmenter.calls == 2
    assert first[..., 2].mean() > first[..., 0].mean() and second[..., 0].mean() > second[..., 2].mean()


@pytest.mark.parametrize("change", ["preview_key", "output_key", "idx"])
async def test_redelivery_under_other_keys_writes_every_key_it_reports(tmp_path, change):
    pipeline, storage, _, _ = build(tmp_path, callbacks=RecordingCallbackSender())
    await pipeline.run_job(make_job())
    job = make_job()
    item = job["items"][0]
    if change == "idx":
        item["idx"] = 7
    else:
        item[change] = item[change].replace("0_", "0_again_")
    result = (await pipeline.run_job(job)).to_dict()
    (done,) = result["items"]
    assert done["status"] == "done"
    reported = [done["output_key"], done["preview_key"]]
    payload = pipeline.callbacks.sent[-1][1]
    reported += list(payload["mask_keys"].values()) + [payload["instances_key"]]
    assert all(storage.path_of(key).is_file() for key in reported if key), reported


@pytest.mark.parametrize("field", ["output_key", "preview_key"])
async def test_two_items_writing_the_same_object_fail_the_job_with_invalid_message(tmp_path, field):
    p, sender, storage = counting_pipeline(tmp_path)
    job = make_job(2)
    job["items"][1][field] = job["items"][0][field]
    result = (await p.run_job(job)).to_dict()
    assert [i["error_code"] for i in result["items"]] == ["INVALID_MESSAGE"] * 2
    assert "both write" in result["items"][0]["error"]
    assert storage.calls == [] and len(sender.sent) == 2


def test_the_fingerprint_covers_what_shapes_the_stored_objects():
    base = make_job()
    job = parse_job(base)
    item = job.items[0]
    fingerprint = job.item_fingerprint(item, {"max_output_side": 4096})
    assert fingerprint == parse_job(make_job()).item_fingerprint(item, {"max_output_side": 4096})
    variants = [
        job.item_fingerprint(item, {"max_output_side": 2048}),
        job.item_fingerprint(item.model_copy(update={"idx": 1}), {"max_output_side": 4096}),
        job.item_fingerprint(item.model_copy(update={"input_key": item.input_key + "x"}), {"max_output_side": 4096}),
        parse_job(make_job(concepts=dict(reversed(list(base["concepts"].items()))))).item_fingerprint(
            item, {"max_output_side": 4096}),
        parse_job(make_job(protect=["Window"])).item_fingerprint(item, {"max_output_side": 4096}),
        parse_job(make_job(user_id="u_other")).item_fingerprint(item, {"max_output_side": 4096}),
    ]
    assert fingerprint not in variants and len(set(variants)) == len(variants)
    # Protect is a set: its order changes nothing.
    assert parse_job(make_job(protect=["Window", "Frame_Molding"])).item_fingerprint(
        item, {"max_output_side": 4096}) == fingerprint

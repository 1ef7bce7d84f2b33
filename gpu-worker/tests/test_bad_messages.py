"""Bad jobs get the contract's answers: {"error"} when unparseable, INVALID_MESSAGE callbacks
for every item when only the rules are bad, INVALID_KEY per item before any storage call."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from engine.callback import RecordingCallbackSender
from engine.errors import InvalidMessage, JobParseError
from engine.job import parse_envelope, parse_job, unwrap_event
from engine.pipeline import Pipeline
from engine.rules import make_plan
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from tests.conftest import make_job, make_settings


class CountingStorage(LocalStorage):
    def __init__(self, root):
        super().__init__(root)
        self.calls: list[str] = []

    async def get(self, key, max_bytes):
        self.calls.append(key)
        return await super().get(key, max_bytes)

    async def put(self, key, data, content_type, metadata=None):
        self.calls.append(key)
        return await super().put(key, data, content_type, metadata)

    async def head(self, key):
        self.calls.append(key)
        return await super().head(key)


def pipeline(tmp_path):
    sender = RecordingCallbackSender()
    storage = CountingStorage(tmp_path / "store")
    return Pipeline(make_settings(), storage, FileMaskSegmenter(tmp_path / "masks"), sender), sender, storage


@pytest.mark.parametrize("raw, names", [
    ("not json at all", ["JSON"]),
    ("[1, 2]", ["object"]),
    ({"input": "x"}, ["object"]),
    ({"job_id": "j", "callback_url": "https://x/cb", "idempotency_prefix": "j"}, ["items"]),
    ({"job_id": "j", "items": [{"idx": 0}], "idempotency_prefix": "j"}, ["callback_url"]),
    ({"job_id": "j", "items": [], "callback_url": "https://x/cb", "idempotency_prefix": "j"}, ["items"]),
    ({"job_id": "j", "items": [{"idx": 0}, {"idx": 0}], "callback_url": "https://x/cb", "idempotency_prefix": "j"},
     ["idx 0"]),
    ({"job_id": "bad id!", "items": [{"idx": 0}], "callback_url": "https://x/cb", "idempotency_prefix": "j"},
     ["job_id"]),
    ({"job_id": "j", "items": [{"idx": 0}], "callback_url": "https://x/cb"}, ["idempotency_prefix"]),
    ({"job_id": "j", "items": [{"key": 1}], "callback_url": "https://x/cb", "idempotency_prefix": "j"},
     ["items.0.idx"]),
    ({"job_id": "j", "items": [{"idx": i} for i in range(501)], "callback_url": "https://x/cb",
      "idempotency_prefix": "j"}, ["items"]),
])
async def test_unparseable_jobs_get_an_error_naming_the_fields(tmp_path, raw, names):
    p, sender, storage = pipeline(tmp_path)
    result = (await p.run_job(raw)).to_dict()
    assert set(result) == {"error"}
    for name in names:
        assert name in result["error"]
    assert sender.sent == [] and storage.calls == []


@pytest.mark.parametrize("overrides, fragment", [
    ({"preset": "garden"}, "unknown preset"),
    ({"concepts": {"Sky": {"action": "recolor", "value": "#FFFFFF"}}}, "Sky"),
    ({"protect": ["Logo"]}, "Logo"),
    ({"concepts": {"Wall": {"action": "recolor", "value": "#12345"}}}, "colour"),
    ({"concepts": {"Wall": {"action": "recolor", "value": "ultraviolet"}}}, "ultraviolet"),
    ({"concepts": {"Wall": {"action": "recolor"}}}, "recolor"),
    ({"concepts": {"Wall": {"action": "tone", "value": "spooky"}}}, "spooky"),
    ({"concepts": {"Wall": {"action": "tone", "value": {"brightness": 2}}}}, "brightness"),
    ({"concepts": {"Wall": {"action": "tone", "value": {"gamma": 0.1}}}}, "gamma"),
    ({"concepts": {"Wall": {"action": "remove", "value": "now"}}}, "remove"),
    ({"concepts": {"Wall": {"action": "paint", "value": "#FFFFFF"}}}, "action"),
    ({"concepts": {"Wall": {"action": "recolor", "value": "#FFFFFF", "instances": [-1]}}}, "instances"),
    ({"user_id": "../etc"}, "user_id"),
    ({"stage": "everything"}, "stage"),
    ({"batch_concurrency": 64}, "batch_concurrency"),
    ({"concepts": {}}, "concepts"),
])
async def test_bad_rules_fail_every_item_with_invalid_message(tmp_path, overrides, fragment):
    p, sender, storage = pipeline(tmp_path)
    result = (await p.run_job(make_job(3, **overrides))).to_dict()
    assert result["status"] == "failed"
    assert [i["error_code"] for i in result["items"]] == ["INVALID_MESSAGE"] * 3
    assert fragment in result["items"][0]["error"]
    assert sorted(payload["idx"] for _, payload, _ in sender.sent) == [0, 1, 2]
    assert all(payload["status"] == "failed" and payload["error_code"] == "INVALID_MESSAGE"
               for _, payload, _ in sender.sent)
    assert storage.calls == [], "nothing is read or written for an invalid job"


@pytest.mark.parametrize("key_field, key", [
    ("input_key", "inputs/u_other/job_123/0.jpg"),
    ("input_key", "inputs/u_abc/job_999/0.jpg"),
    ("input_key", "inputs/u_abc/job_123/../../u_other/job_1/0.jpg"),
    ("input_key", "/inputs/u_abc/job_123/0.jpg"),
    ("input_key", "inputs/u_abc/job_123/0\n.jpg"),
    ("input_key", "inputs/u_abc/job_123/"),
    ("output_key", "previews/u_abc/job_123/0.png"),
    ("output_key", "outputs/u_abc/job_123//0.png"),
    ("preview_key", "previews/u_abc/job_123/./0.jpg"),
    ("preview_key", ""),
    ("output_key", "outputs/u_abc/job_123/a\\..\\b.png"),
])
async def test_keys_outside_the_callers_prefixes_fail_with_invalid_key_before_any_storage_call(tmp_path, key_field, key):
    p, sender, storage = pipeline(tmp_path)
    job = make_job(1)
    job["items"][0][key_field] = key
    result = (await p.run_job(job)).to_dict()
    assert result["items"][0]["error_code"] == "INVALID_KEY"
    assert storage.calls == []
    assert sender.sent[0][1]["error_code"] == "INVALID_KEY"


def test_named_and_numeric_tones_and_palette_ids_resolve():
    job = parse_job(make_job(concepts={"Wall": {"action": "recolor", "value": "offwhite_b"},
                                       "Floor": {"action": "tone", "value": {"brightness": 0.2, "temperature": -1}},
                                       "Ceiling": {"action": "tone", "value": "warm"},
                                       "Furniture": {"action": "remove", "instances": [0, 2]}}))
    plan = make_plan(job)
    assert [r.concept for r in plan.rules] == ["Wall", "Floor", "Ceiling", "Furniture"]
    assert plan.rules[0].op.rgb == (236, 231, 218)
    assert plan.rules[1].op.params.temperature == -1
    assert plan.rules[3].instances == (0, 2)
    assert [c.name for c in plan.concepts_to_find()] == ["Wall", "Floor", "Ceiling", "Furniture",
                                                         "Frame_Molding", "Window"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(list(make_job()) + ["input", "x"]), json_values, max_size=8))
def test_parsing_never_fails_any_other_way(raw):
    """Arbitrary JSON is either a job or one of the two parse errors, never a crash."""
    for candidate in (raw, json.dumps(raw), {"input": raw}):
        try:
            event = unwrap_event(candidate)
            parse_envelope(event)
            make_plan(parse_job(event))
        except (JobParseError, InvalidMessage) as exc:
            assert exc.message


@hsettings(max_examples=200)
@given(st.text(max_size=80))
def test_key_checks_accept_only_keys_under_the_prefix(suffix):
    from engine.errors import InvalidKey
    from engine.job import Item, check_item_keys

    job = parse_job(make_job())
    item = Item(idx=0, input_key="inputs/u_abc/job_123/" + suffix, output_key="outputs/u_abc/job_123/r.png",
                preview_key="previews/u_abc/job_123/t.jpg")
    try:
        check_item_keys(job, item)
    except InvalidKey:
        return
    import unicodedata

    from engine.job import MAX_SEGMENT_BYTES

    parts = suffix.split("/")
    assert suffix and all(p not in ("", ".", "..") for p in parts)
    assert all(unicodedata.category(c)[0] != "C" or unicodedata.category(c) in ("Co", "Cn") for c in suffix)
    assert "\\" not in suffix and all(len(p.encode("utf-8")) <= MAX_SEGMENT_BYTES for p in parts)

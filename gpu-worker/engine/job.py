"""The job message (contract section 2), parsed in two steps.

1. ``parse_envelope``: what is needed to report on every item (job id, items with idx,
   callback url, idempotency prefix). Failing here means nobody can be told per item, so
   the caller answers ``{"error": ...}`` (``JobParseError``).
2. ``parse_job``: the rest (user, preset, stage, rules, keys' shape). Failing here is
   ``InvalidMessage``: every item gets a ``failed`` callback with ``INVALID_MESSAGE``.

Key scoping (``check_item_keys``) is per item: a bad key fails that item with ``INVALID_KEY``.
Keys are held to what every store accepts (S3 counts a key's length in UTF-8 bytes, a local
filesystem a path segment's): no lone surrogates, no control or format characters, at most
``MAX_KEY_BYTES`` in all and ``MAX_SEGMENT_BYTES`` a segment. Two items writing the same object
are refused with the whole job (``check_unique_keys``, ``INVALID_MESSAGE``).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StringConstraints, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from engine.actions import ACTIONS
from engine.callback_policy import parse_callback_url
from engine.errors import InvalidKey, InvalidMessage, JobParseError

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
MAX_ITEMS = 500
MAX_KEY_BYTES = 1024  # S3's limit, in UTF-8 bytes
MAX_SEGMENT_BYTES = 255  # a file name's limit on common filesystems (the local store)
# Unicode categories refused in keys: controls (C0, DEL, C1), format characters (bidi overrides,
# zero-width), surrogates, line and paragraph separators.
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EnvelopeItem(_Model):
    idx: int = Field(ge=0, le=1_000_000)


class Envelope(_Model):
    job_id: Identifier
    idempotency_prefix: Identifier
    callback_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    items: list[EnvelopeItem] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("callback_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        parse_callback_url(url)  # ValueError: refused here, before any work, not after it
        return url

    @field_validator("items")
    @classmethod
    def _unique_idx(cls, items: list[EnvelopeItem]) -> list[EnvelopeItem]:
        seen: set[int] = set()
        for item in items:
            if item.idx in seen:
                raise ValueError(f"idx {item.idx} appears more than once")
            seen.add(item.idx)
        return items


class Item(_Model):
    idx: int = Field(ge=0)
    # A missing or empty key fails only its item (INVALID_KEY), so these default to "".
    input_key: str = ""
    output_key: str = ""
    preview_key: str = ""


class Rule(_Model):
    """One concept's rule: ``action`` is a registered action (engine/actions/), whose own model
    validates ``value``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    action: str
    value: Any = Field(None, validate_default=True)
    instances: list[Annotated[int, Field(ge=0)]] | None = None

    @field_validator("action")
    @classmethod
    def _known_action(cls, action: str) -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; use one of {', '.join(sorted(ACTIONS))}")
        return action

    @field_validator("value")
    @classmethod
    def _action_value(cls, value: Any, info: ValidationInfo) -> Any:
        action = ACTIONS.get(info.data.get("action", ""))
        return value if action is None else action.parse_value(value)


class Job(_Model):
    job_id: Identifier
    user_id: Identifier
    preset: str
    stage: Literal["full", "segment", "apply"] = "full"
    concepts: dict[str, Rule] = Field(default_factory=dict)
    protect: list[str] = Field(default_factory=list)
    items: list[Item] = Field(min_length=1, max_length=MAX_ITEMS)
    callback_url: str
    idempotency_prefix: Identifier
    batch_concurrency: int | None = Field(None, ge=1, le=32)

    @model_validator(mode="after")
    def _unique_keys(self) -> Job:
        if self.stage != "segment":  # a segment job writes its masks only, named by idx
            check_unique_keys(self.items)
        return self

    def item_fingerprint(self, item: Item, params: dict[str, Any] | None = None) -> str:
        """What makes an item's stored objects reusable on redelivery (contract section 6):
        everything that shapes them or names them. Rules in job order (edits apply in that
        order), protect as a set, the item's idx and keys (its mask keys follow from user, job
        and idx), and ``params``: the worker's settings that shape the objects."""
        basis = {
            "job": self.job_id, "user": self.user_id, "preset": self.preset, "stage": self.stage,
            "rules": [[name, rule.model_dump(mode="json")] for name, rule in self.concepts.items()],
            "protect": sorted(set(self.protect)),
            "item": [item.idx, item.input_key, item.output_key, item.preview_key],
            "params": params or {},
        }
        text = json.dumps(basis, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


def check_unique_keys(items: list[Item]) -> None:
    """ValueError when two items would write the same object (an output or preview key shared,
    between items or between one's output and another's preview): one would overwrite the other."""
    seen: dict[str, int] = {}
    for item in items:
        for key in {item.output_key, item.preview_key}:
            if not key:
                continue  # a missing key fails its own item (INVALID_KEY)
            if key in seen and seen[key] != item.idx:
                raise ValueError(f"items {seen[key]} and {item.idx} both write {key!r}")
            seen[key] = item.idx


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "job"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def load_json(text: str) -> Any:
    """JSON text to Python; ``JobParseError`` for anything json cannot or will not build (bad
    syntax, nesting deeper than the interpreter's recursion limit, integers past Python's
    digit limit)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobParseError(f"job is not valid JSON ({exc.msg} at position {exc.pos})") from exc
    except RecursionError as exc:
        raise JobParseError("job JSON is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise JobParseError("job JSON holds a number that cannot be read") from exc


def unwrap_event(raw: Any) -> Any:
    """Accept a Runpod-style ``{"input": {...}}`` or the bare job; JSON text is decoded."""
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        raw = load_json(raw)
    if isinstance(raw, dict) and "input" in raw and "items" not in raw:
        raw = raw["input"]
    if not isinstance(raw, dict):
        raise JobParseError("job must be a JSON object")
    return raw


def parse_envelope(raw: Any) -> Envelope:
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        raise JobParseError(f"invalid job envelope: {_describe(exc)}") from exc


def parse_job(raw: dict[str, Any]) -> Job:
    try:
        return Job.model_validate(raw)
    except ValidationError as exc:
        raise InvalidMessage(f"invalid job: {_describe(exc)}") from exc


def _check_key(key: str, prefix: str, field: str) -> None:
    if not key:
        raise InvalidKey(f"{field} is missing")
    if not key.startswith(prefix) or len(key) <= len(prefix):
        raise InvalidKey(f"{field} must start with {prefix}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidKey(f"{field} is not valid Unicode (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"{field} is {size} bytes in UTF-8; the limit is {MAX_KEY_BYTES}")
    if any(unicodedata.category(ch) in REFUSED_CATEGORIES for ch in key):
        raise InvalidKey(f"{field} contains control or format characters")
    if "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey(f"{field} has an empty, '.' or '..' path segment")
    if any(len(part.encode("utf-8")) > MAX_SEGMENT_BYTES for part in key.split("/")):
        raise InvalidKey(f"{field} has a path segment over {MAX_SEGMENT_BYTES} bytes")


def check_item_keys(job: Job, item: Item) -> None:
    """Keys must sit under the caller's own prefixes; raises ``InvalidKey`` before any storage call."""
    _check_key(item.input_key, f"inputs/{job.user_id}/{job.job_id}/", "input_key")
    _check_key(item.output_key, f"outputs/{job.user_id}/{job.job_id}/", "output_key")
    _check_key(item.preview_key, f"previews/{job.user_id}/{job.job_id}/", "preview_key")


def mask_key(job: Job, idx: int, concept: str) -> str:
    return f"masks/{job.user_id}/{job.job_id}/{idx}_{concept}.png"


def instances_key(job: Job, idx: int) -> str:
    return f"masks/{job.user_id}/{job.job_id}/{idx}_instances.json"


def idempotency_key(prefix: str, idx: int, status: Literal["done", "failed"]) -> str:
    """Names the item's outcome (contract section 4): a ``done`` after a ``failed`` is a new key."""
    return f"{prefix}:{idx}:0" if status == "done" else f"{prefix}:{idx}:0:failed"

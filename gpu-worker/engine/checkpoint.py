"""Where the SAM3 checkpoint comes from: ``SAM3_MODEL`` as a local folder, or a hub id found in
``MODEL_CACHE_DIR`` (downloaded there unless offline). No torch here: the fetch script uses it.
Errors name the settings and the fetch command, never a path or a token."""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.errors import SegmentationUnavailable
from engine.settings import Settings

FETCH_COMMAND = "python -m scripts.fetch_weights"
# What a transformers SAM3 checkpoint needs; the hub repo also holds the original .pt weights.
WEIGHT_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_checkpoint(settings: Settings) -> Path:
    """The local folder holding the checkpoint: ``SAM3_MODEL`` itself, or its hub snapshot."""
    source = settings.sam3_model.strip()
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    if not is_hub_id(source):
        raise SegmentationUnavailable(
            "SAM3 weights are not available: SAM3_MODEL names a folder that does not exist; point it at "
            f"a checkpoint folder, or at a hub id and run `{FETCH_COMMAND}` to fetch it into MODEL_CACHE_DIR"
        )
    return _hub_snapshot(source, settings)


def is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _hub_snapshot(repo_id: str, settings: Settings) -> Path:
    """Find ``repo_id`` in MODEL_CACHE_DIR; download it there only when not offline."""
    from huggingface_hub import snapshot_download

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    kwargs = {"repo_id": repo_id, "cache_dir": str(settings.model_cache_dir), "token": token,
              "allow_patterns": WEIGHT_FILE_PATTERNS}
    try:
        return Path(snapshot_download(**kwargs, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not in the cache (or the cache is unreadable)
        if _offline():
            raise SegmentationUnavailable(_not_fetched(repo_id)) from exc
    try:
        return Path(snapshot_download(**kwargs))
    except Exception as exc:  # noqa: BLE001 - network, gated repo, bad token, disk
        raise SegmentationUnavailable(_not_fetched(repo_id)) from exc


def _not_fetched(repo_id: str) -> str:
    return (
        f"SAM3 weights are not available: SAM3_MODEL '{repo_id}' is not in MODEL_CACHE_DIR and could not "
        f"be downloaded; run `{FETCH_COMMAND}` (with HF_TOKEN set and the model licence accepted on the hub)"
    )

"""Download the SAM3 checkpoint named by SAM3_MODEL into MODEL_CACHE_DIR.

    cd gpu-worker && HF_TOKEN=hf_... python -m scripts.fetch_weights

Reads the worker's own settings (environment and ``.env``): SAM3_MODEL (a Hugging Face repo id),
MODEL_CACHE_DIR and HF_TOKEN. The files land in the Hugging Face cache layout under
MODEL_CACHE_DIR, which is where the worker looks at cold start. Only what transformers needs is
fetched (configs, safetensors weights, tokenizer files). ``facebook/sam3`` is gated: accept its
licence on the hub with the account the token belongs to first. Exit status 0 on success,
1 on failure, with a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)

from engine.checkpoint import WEIGHT_FILE_PATTERNS
from engine.settings import Settings


def fetch(repo_id: str, cache_dir: Path, token: str | None) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    return Path(
        snapshot_download(repo_id=repo_id, cache_dir=str(cache_dir), token=token, allow_patterns=WEIGHT_FILE_PATTERNS)
    )


def failure_reason(exc: Exception, repo_id: str) -> str:
    if isinstance(exc, GatedRepoError):
        return (
            f"'{repo_id}' is gated: accept its licence at https://huggingface.co/{repo_id} with the account "
            "of HF_TOKEN, then run this again"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"'{repo_id}' was not found or HF_TOKEN has no access to it: check SAM3_MODEL and HF_TOKEN"
    if isinstance(exc, LocalEntryNotFoundError):
        return "the hub could not be reached (offline, or no network) and the files are not in MODEL_CACHE_DIR"
    if isinstance(exc, HfHubHTTPError):
        return f"the hub refused the download ({type(exc).__name__}): check HF_TOKEN and the network"
    if isinstance(exc, OSError):
        return f"could not write to MODEL_CACHE_DIR or reach the hub ({type(exc).__name__})"
    return f"download failed ({type(exc).__name__})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="repo id to fetch instead of SAM3_MODEL")
    parser.add_argument("--cache-dir", type=Path, help="folder to fetch into instead of MODEL_CACHE_DIR")
    args = parser.parse_args(argv)

    settings = Settings()
    repo_id = args.model or settings.sam3_model
    cache_dir = args.cache_dir or settings.model_cache_dir
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    if Path(repo_id).expanduser().is_dir():
        print("SAM3_MODEL is a local folder: nothing to fetch")
        return 0
    if token is None:
        print("note: HF_TOKEN is not set; a gated model such as facebook/sam3 needs it", file=sys.stderr)
    try:
        folder = fetch(repo_id, cache_dir, token)
    except Exception as exc:  # noqa: BLE001 - every failure gets a one-line reason, no traceback
        print(f"error: could not fetch SAM3 weights: {failure_reason(exc, repo_id)}", file=sys.stderr)
        return 1
    size_gb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9
    print(f"SAM3 weights for '{repo_id}' are in MODEL_CACHE_DIR ({cache_dir}), {size_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Every setting the worker reads, in one typed object (contract section 7).

Values come from the environment (and an optional ``.env`` file in the working directory).
Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LOCAL_STORE = PACKAGE_DIR / "local_store"
CF_API_DEFAULT = "https://api.cloudflare.com/client/v4"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, use_attribute_docstrings=True)

    # Storage
    storage_s3_endpoint: str | None = None
    """R2/S3 endpoint URL (R2: https://<account-id>.r2.cloudflarestorage.com); unset: the local folder back end (STORAGE_LOCAL_DIR)."""
    storage_access_key: SecretStr | None = None
    """S3 access key id."""
    storage_secret_key: SecretStr | None = None
    """S3 secret access key; never logged."""
    storage_bucket: str = "s3-images"
    """Bucket holding inputs, outputs, previews and masks."""
    storage_region: str = "auto"
    """S3 region name (R2: auto)."""
    storage_local_dir: Path = DEFAULT_LOCAL_STORE
    """Root folder of the local back end (used when STORAGE_S3_ENDPOINT is unset)."""
    storage_max_attempts: int = Field(5, ge=1, le=20)
    """Attempts per S3 call (botocore standard retry mode, transient errors only)."""

    # Callbacks
    gpu_callback_secret: SecretStr | None = None
    """HMAC-SHA256 key that signs every callback; unset: no callback is sent (undelivered)."""
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated hosts (host or host:port) allowed to receive callbacks, http allowed for them; unset: https to public addresses only."""
    callback_timeout_sec: float = Field(10.0, gt=0)
    """Seconds per callback attempt as a whole (connect, send, the answer's headers), however slowly bytes arrive."""
    callback_backoff: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [5.0, 30.0, 300.0])
    """Base delays in seconds between callback attempts, comma-separated (full jitter; Retry-After honoured up to the largest)."""
    callback_deadline_sec: float = Field(900.0, gt=0)
    """A callback still failing this many seconds after its first attempt is given up (undelivered)."""

    # Work
    batch_concurrency: int = Field(4, ge=1, le=32)
    """A job's items in each phase at once (download, pixels, upload) when the job does not say."""
    max_batch_concurrency: int = Field(8, ge=1, le=32)
    """A job's own batch_concurrency is capped at this."""
    job_concurrency: int = Field(4, ge=1, le=64)
    """Jobs one worker runs at once (the runpod SDK's concurrency_modifier), sharing one model, one segmentation batcher and DECODED_BUDGET_MB."""
    decoded_budget_mb: int = Field(2560, ge=1)
    """Photos held decoded across all jobs, in MB of estimated decoded cost (about 290 MB for a 12 MP JPEG, more for 16-bit or paletted sources); a larger photo runs alone."""
    stop_grace_sec: float = Field(20.0, gt=0)
    """On a stop (platform cancel, execution timeout, SIGTERM): seconds unfinished items' uploads under way and unsent callbacks get before the job lets go (unfinished items end TIMEOUT)."""
    render_concurrency: int = Field(default_factory=lambda: min(2, max(1, (os.cpu_count() or 2) // 2)), ge=1, le=32)
    """Photos whose edits run at the same time on the host (CPU work; the numpy editor's four edits on large masks peaked at 51 bytes a pixel at 2 MP, about 0.6 GB at 12 MP); default one per two cores, at most 2 (1 on a 2-core host, 2 on a GPU server)."""
    item_timeout_sec: float = Field(600.0, gt=0)
    """Seconds of an item's own work (download to callback-ready) before it fails with TIMEOUT."""

    # Limits
    max_input_bytes: int = Field(60 * 1024 * 1024, gt=0)
    """Largest input object in bytes (INPUT_TOO_LARGE above it)."""
    max_input_pixels: int = Field(120_000_000, gt=0)
    """Largest input image in pixels, checked before decoding (INPUT_TOO_LARGE above it)."""
    max_output_side: int = Field(4096, ge=64)
    """Longest side of the result PNG; larger inputs are scaled down and the masks follow."""
    thumbnail_side: int = Field(300, ge=16)
    """Longest side of the JPEG thumbnail."""
    png_compress_level: int = Field(1, ge=0, le=3)
    """ISA-L deflate level (0-3) of the result PNG (engine/png.py); always lossless."""

    # Segmentation
    segmenter: Literal["sam3", "files"] = "sam3"
    """sam3 (the model) or files (masks read from SEGMENTER_MASKS_DIR: local runs and tests without weights)."""
    segmenter_masks_dir: Path | None = None
    """Folder the files segmenter reads, one {input key without extension}/{Concept}.png per photo."""
    segmenter_files_delay_ms: float = Field(0.0, ge=0)
    """SEGMENTER=files only: a simulated device's time per photo in milliseconds (tests and benchmarks)."""
    model_cache_dir: Path = Path("/models")
    """Where the SAM3 weights live or are downloaded to (Hugging Face cache layout)."""
    sam3_model: str = "facebook/sam3"
    """Hugging Face repo id or local folder of the SAM3 checkpoint."""
    hf_token: SecretStr | None = None
    """Token for the gated SAM3 download (python -m scripts.fetch_weights); never logged."""
    sam3_device: str | None = None
    """Torch device for SAM3; unset: cuda when available, else cpu."""
    segment_max_batch: int = Field(4, ge=1, le=32)
    """Photos handed to one segmentation call at most."""

    gpu_jpeg_decode: bool = False
    """Decode plain RGB JPEG inputs on the GPU (nvJPEG); its pixels differ from libjpeg's by up to 3 levels (measured on an H100), so protected pixels would no longer match a libjpeg decode of the input."""

    # Edits
    apply_backend: Literal["auto", "numpy", "torch"] = "auto"
    """auto: the whole edit in torch on CUDA when present, else numpy on the host; torch: torch on CUDA, else on the CPU (parity checks, benchmarks); numpy: the host."""
    edit_gpu_memory_mb: int = Field(8192, ge=256)
    """Device memory the torch edit path may hold for photos in flight (448 bytes a pixel, the highest peak measured for one photo's edits: about 5.4 GB a 12 MP photo; a photo larger than the whole budget runs alone)."""
    inpaint_model: Path | None = None
    """Learned inpainter for remove, a torch.export program (.pt2) with LaMa's calling convention; unset: $MODEL_CACHE_DIR/inpaint/lama.pt2 when present, else the built-in structure-aware fill."""

    # Platform
    worker_adapter: Literal["runpod", "queue_pull"] = "runpod"
    """runpod (Runpod Serverless) or queue_pull (Cloudflare Queues pull consumer)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """debug, info, warning or error."""
    log_format: Literal["json", "text"] | None = None
    """Log lines on stderr: json (one JSON object per line) or text (one readable line per record); unset: text for a local --event run, json otherwise."""

    # Queue pull adapter (contract section 8)
    cf_api_base: str = CF_API_DEFAULT
    """Cloudflare API base URL (queue_pull)."""
    cf_account_id: str | None = None
    """Cloudflare account id (queue_pull)."""
    cf_queue_id: str | None = None
    """Cloudflare Queue id (queue_pull)."""
    cf_api_token: SecretStr | None = None
    """Cloudflare API token with Queues read and write, sent as a bearer token (queue_pull); never logged."""
    queue_pull_batch_size: int = Field(4, ge=1, le=100)
    """Messages leased per pull (queue_pull)."""
    queue_pull_visibility_timeout_ms: int = Field(3_600_000, ge=1_000, le=43_200_000)
    """Lease length in milliseconds: long enough for a job of the largest size (queue_pull)."""
    queue_pull_retry_delay_sec: int = Field(60, ge=0, le=43_200)
    """Delay before a job that could not be run is delivered again (queue_pull)."""
    queue_pull_idle_sleep_sec: float = Field(2.0, ge=0)
    """Seconds to wait after an empty pull (queue_pull)."""

    @field_validator("callback_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("callback_backoff", mode="before")
    @classmethod
    def _split_backoff(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(v) for v in value.split(",") if v.strip()]
        return value

    @field_validator("callback_backoff")
    @classmethod
    def _backoff_non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("CALLBACK_BACKOFF delays must be >= 0")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

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
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Storage
    storage_s3_endpoint: str | None = None
    storage_access_key: SecretStr | None = None
    storage_secret_key: SecretStr | None = None
    storage_bucket: str = "s3-images"
    storage_region: str = "auto"
    storage_local_dir: Path = DEFAULT_LOCAL_STORE
    storage_max_attempts: int = Field(5, ge=1, le=20)

    # Callbacks
    gpu_callback_secret: SecretStr | None = None
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    callback_timeout_sec: float = Field(10.0, gt=0)
    callback_backoff: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [5.0, 30.0, 300.0])
    callback_deadline_sec: float = Field(900.0, gt=0)

    # Work
    batch_concurrency: int = Field(4, ge=1, le=32)
    # Photos whose edits run at once. Edits are CPU work holding about 0.5 GB each at 12 MP: by
    # default one per two cores, at most two (so 1 on a 2-core host, 2 on a GPU server).
    render_concurrency: int = Field(default_factory=lambda: min(2, max(1, (os.cpu_count() or 2) // 2)), ge=1, le=32)
    item_timeout_sec: float = Field(600.0, gt=0)

    # Limits
    max_input_bytes: int = Field(60 * 1024 * 1024, gt=0)
    max_input_pixels: int = Field(120_000_000, gt=0)
    max_output_side: int = Field(4096, ge=64)
    thumbnail_side: int = Field(300, ge=16)
    png_compress_level: int = Field(1, ge=0, le=3)  # ISA-L deflate level (engine/png.py)

    # Segmentation
    segmenter: Literal["sam3", "files"] = "sam3"
    segmenter_masks_dir: Path | None = None
    model_cache_dir: Path = Path("/models")
    sam3_model: str = "facebook/sam3"
    hf_token: SecretStr | None = None
    sam3_device: str | None = None  # default: cuda when available, else cpu
    segment_max_batch: int = Field(4, ge=1, le=32)  # photos in one segmentation call

    # JPEG inputs decoded by nvJPEG when a GPU is present. Off: its pixels differ from libjpeg's
    # (up to 3 levels on an H100), and protected pixels must match the receiver's decode.
    gpu_jpeg_decode: bool = False

    # Edits
    apply_backend: Literal["auto", "numpy"] = "auto"  # auto: torch on CUDA when present, else numpy
    inpaint_model: Path | None = None  # TorchScript inpainter; default $MODEL_CACHE_DIR/inpaint/lama.pt if present

    # Platform
    worker_adapter: Literal["runpod", "queue_pull"] = "runpod"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Queue pull adapter (contract section 8)
    cf_api_base: str = CF_API_DEFAULT
    cf_account_id: str | None = None
    cf_queue_id: str | None = None
    cf_api_token: SecretStr | None = None
    queue_pull_batch_size: int = Field(4, ge=1, le=100)
    queue_pull_visibility_timeout_ms: int = Field(3_600_000, ge=1_000, le=43_200_000)
    queue_pull_retry_delay_sec: int = Field(60, ge=0, le=43_200)
    queue_pull_idle_sleep_sec: float = Field(2.0, ge=0)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

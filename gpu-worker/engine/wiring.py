"""Builds the real pipeline from settings: cold-start work happens here, once per process."""

from __future__ import annotations

import logging

from engine.callback import HttpCallbackSender
from engine.errors import SegmentationUnavailable
from engine.pipeline import Pipeline
from engine.segmenter import FileMaskSegmenter, Segmenter, UnavailableSegmenter
from engine.settings import Settings
from engine.storage import storage_from_settings

log = logging.getLogger("worker.setup")


def build_segmenter(settings: Settings) -> Segmenter:
    if settings.segmenter == "files":
        if settings.segmenter_masks_dir is None:
            raise ValueError("SEGMENTER=files needs SEGMENTER_MASKS_DIR")
        return FileMaskSegmenter(settings.segmenter_masks_dir)
    from engine.sam3 import load_sam3_segmenter  # imports torch: only when SAM3 is wanted

    try:
        return load_sam3_segmenter(settings)
    except SegmentationUnavailable as exc:
        log.error("segmenter.unavailable", extra={"reason": exc.message})
        return UnavailableSegmenter(exc.message)


def build_callback_sender(settings: Settings) -> HttpCallbackSender:
    secret = settings.gpu_callback_secret.get_secret_value() if settings.gpu_callback_secret else None
    return HttpCallbackSender(
        secret,
        backoff=settings.callback_backoff,
        timeout=settings.callback_timeout_sec,
        deadline=settings.callback_deadline_sec,
        allowed_hosts=settings.callback_allowed_hosts,
    )


def build_pipeline(settings: Settings, *, segmenter: Segmenter | None = None) -> Pipeline:
    return Pipeline(
        settings,
        storage_from_settings(settings),
        segmenter if segmenter is not None else build_segmenter(settings),
        build_callback_sender(settings),
    )

"""Builds every part of the worker from settings: cold-start work happens here, once per process.

``Pipeline`` loads nothing itself: it receives its storage, segmenter, callback sender, editor
(where edits run, with its inpainter) and JPEG decode device from here (tests hand it doubles instead).
"""

from __future__ import annotations

import logging

from engine.callback import HttpCallbackSender
from engine.editor import Editor, choose_editor
from engine.edits.learned import choose_inpainter
from engine.edits.remove import Inpainter
from engine.errors import SegmentationUnavailable
from engine.pipeline import Pipeline
from engine.postprocess import gpu_jpeg_device
from engine.segmenter import FileMaskSegmenter, Segmenter, UnavailableSegmenter
from engine.settings import Settings
from engine.storage import Storage, storage_from_settings

log = logging.getLogger("worker.setup")


def build_segmenter(settings: Settings) -> Segmenter:
    if settings.segmenter == "files":
        if settings.segmenter_masks_dir is None:
            raise ValueError("SEGMENTER=files needs SEGMENTER_MASKS_DIR")
        return FileMaskSegmenter(settings.segmenter_masks_dir, settings.segmenter_files_delay_ms / 1000)
    from engine.sam3 import load_sam3_segmenter  # imports torch: only when SAM3 is wanted

    try:
        return load_sam3_segmenter(settings)
    except SegmentationUnavailable as exc:
        log.warning("segmenter.unavailable", extra={"reason": exc.message})  # expected without weights: apply jobs still run
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


def build_inpainter(settings: Settings) -> Inpainter:
    return choose_inpainter(settings.inpaint_model, settings.model_cache_dir)


def build_editor(settings: Settings) -> Editor:
    return choose_editor(settings.apply_backend, build_inpainter(settings), settings.render_concurrency,
                         settings.edit_gpu_memory_mb)


def build_pipeline(settings: Settings, *, segmenter: Segmenter | None = None,
                   storage: Storage | None = None) -> Pipeline:
    return Pipeline(
        settings,
        storage if storage is not None else storage_from_settings(settings),
        segmenter if segmenter is not None else build_segmenter(settings),
        build_callback_sender(settings),
        editor=build_editor(settings),
        jpeg_device=gpu_jpeg_device(settings.gpu_jpeg_decode),
    )

"""Runpod Serverless adapter: the pipeline is built once at cold start; each job is one handler
call; one worker runs several jobs at once under the SDK's job loop (``adapters.runpod_loop``).

The runpod SDK's own local tools work on this file's handler: ``python main.py --test_input
'{"input": {...}}'``, a ``test_input.json`` in the working directory, or ``--rp_serve_api``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import runpod
from runpod.serverless import _set_config_args
from runpod.serverless.modules.rp_fitness import run_fitness_checks
from runpod.serverless.modules.worker_state import JobsProgress, PingJobMirror
from runpod.serverless.worker import _is_local, heartbeat

from adapters.runpod_loop import WorkerLoop
from engine.callback import Delivery
from engine.pipeline import Pipeline
from engine.report import ItemReport
from engine.settings import Settings
from engine.wiring import build_pipeline

log = logging.getLogger("worker.runpod")

Progress = Callable[[dict[str, Any], dict[str, int]], None]
DELIVERING_JOBS_MAX = 64


def make_handler(pipeline: Pipeline, progress: Progress | None = None):
    """The job handler. ``progress(job, {"items_finished", "items_total"})`` hears each item's end."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        raw = job.get("input")
        items = raw.get("items") if isinstance(raw, dict) else None
        total = len(items) if isinstance(items, list) else 0
        finished = 0

        def item_done(report: ItemReport, delivery: Delivery) -> None:
            nonlocal finished
            finished += 1
            if progress is not None and finished < total:  # the last one comes with the result
                progress(job, {"items_finished": finished, "items_total": total})

        try:
            result = (await pipeline.run_job(raw, on_item_done=item_done)).to_dict()
        except Exception as exc:  # noqa: BLE001 - the SDK would answer with a traceback and paths
            log.error("job.crashed", exc_info=exc)
            return {"error": "internal error while running the job"}
        if pipeline.needs_fresh_worker:
            result["refresh_worker"] = True  # the SDK posts it as stopPod: Runpod replaces this worker
        return result

    return handler


def concurrency_modifier(settings: Settings, pipeline: Pipeline) -> Callable[[int], int]:
    """Jobs this worker takes at once: ``JOB_CONCURRENCY`` doing GPU work, plus the jobs whose
    only work left is callbacks (they hold no GPU, photo or memory budget), at most 64 of them."""

    def jobs_allowed(current: int) -> int:
        return settings.job_concurrency + min(DELIVERING_JOBS_MAX, pipeline.jobs_delivering)

    return jobs_allowed


def start(settings: Settings, pipeline: Pipeline | None = None) -> None:
    pipeline = pipeline or build_pipeline(settings)  # cold start: model loaded once, outside the handler
    argv = list(sys.argv)
    config = _set_config_args({"handler": make_handler(pipeline)})  # takes the SDK's flags off argv
    if _is_local(config) or config["rp_args"].get("rp_serve_api") or os.environ.get("RUNPOD_REALTIME_PORT"):
        sys.argv = argv  # the SDK's local tools (one job at a time) read their flags again
        runpod.serverless.start({"handler": config["handler"]})
        return
    serve(settings, pipeline, config["rp_args"])


def serve(settings: Settings, pipeline: Pipeline, rp_args: dict[str, Any] | None = None) -> None:
    """The SDK's ``run_worker`` with the worker's own loop: fitness checks, the ping process
    (it reports the jobs in hand), then jobs until a signal or a broken GPU."""
    config = {"handler": make_handler(pipeline, runpod.serverless.progress_update),
              "concurrency_modifier": concurrency_modifier(settings, pipeline), "rp_args": rp_args or {}}
    asyncio.run(run_fitness_checks())
    mirror = PingJobMirror()
    JobsProgress().set_mirror(mirror)
    heartbeat.start_ping(mirror)
    log.info("worker.serving", extra={"job_concurrency": settings.job_concurrency})
    # The engine ends a shut-down job within STOP_GRACE_SEC; the margin covers posting its result.
    WorkerLoop(config, pipeline, drain_timeout=settings.stop_grace_sec + 30).start()

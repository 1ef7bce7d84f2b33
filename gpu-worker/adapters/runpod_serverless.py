"""Runpod Serverless adapter: build the pipeline once at cold start, then one job per call.

The runpod SDK's own local tools work on this file's handler: ``python main.py --test_input
'{"input": {...}}'``, a ``test_input.json`` in the working directory, or ``--rp_serve_api``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import runpod

from engine.callback import Delivery
from engine.pipeline import Pipeline
from engine.report import ItemReport
from engine.settings import Settings
from engine.wiring import build_pipeline


def make_handler(pipeline: Pipeline):
    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        total = len(job.get("input", {}).get("items", []) or []) if isinstance(job.get("input"), dict) else 0
        finished: list[int] = []

        def progress(report: ItemReport, delivery: Delivery) -> None:
            finished.append(report.idx)
            if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):  # only on Runpod, not in local tests
                runpod.serverless.progress_update(job, {"items_finished": len(finished), "items_total": total})

        result = (await pipeline.run_job(job.get("input"), on_item_done=progress)).to_dict()
        if pipeline.needs_fresh_worker or pipeline.stopping:
            result["refresh_worker"] = True  # the SDK pops this, reports the job, then stops this worker
        return result

    return handler


def install_sigterm(pipeline: Pipeline) -> None:
    """SIGTERM while a job runs: finish running items, report the rest failed, then stop."""

    def on_sigterm(signum: int, frame: object) -> None:
        pipeline.begin_shutdown()
        if pipeline.jobs_running == 0:
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


def start(settings: Settings) -> None:
    pipeline = build_pipeline(settings)  # cold start: model loaded once, outside the handler
    install_sigterm(pipeline)
    runpod.serverless.start({"handler": make_handler(pipeline)})

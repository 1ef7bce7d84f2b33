"""Entry point.

    python main.py                          the platform adapter (WORKER_ADAPTER, default runpod)
    python main.py --adapter queue_pull     pull jobs from a Cloudflare Queue (--once: drain and exit)
    python main.py --event sample.json      run one job locally and show what it wrote and sent

Runpod's own local flags (--test_input, --rp_serve_api) pass through to the runpod SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from engine.logs import configure_logging
from engine.settings import Settings


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="SAM3 photo-editing GPU worker")
    parser.add_argument("--event", type=Path, help="run one job from this JSON file locally and exit")
    parser.add_argument("--adapter", choices=["runpod", "queue_pull"], help="overrides WORKER_ADAPTER")
    parser.add_argument("--once", action="store_true", help="queue_pull: drain what the queue holds now, then exit")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = [sys.argv[0], *rest]  # leave runpod's own flags for the runpod SDK
    settings = Settings()
    configure_logging(settings.log_level)
    if args.event is not None:
        from local_run import run_event_file

        return asyncio.run(run_event_file(args.event, settings))
    adapter = args.adapter or settings.worker_adapter
    if adapter == "queue_pull":
        from adapters import queue_pull
        from engine.wiring import build_pipeline

        return queue_pull.main(settings, build_pipeline, once=args.once)
    from adapters import runpod_serverless

    runpod_serverless.start(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

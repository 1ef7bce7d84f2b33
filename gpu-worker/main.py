"""Entry point of the SAM3 photo-editing worker; ``python main.py --help`` lists the run modes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from engine.logs import configure_logging
from engine.settings import Settings

DESCRIPTION = "SAM3 photo-editing GPU worker. Run from gpu-worker/."
EPILOG = """\
run modes:
  python main.py --event FILE           one job from FILE ({"input": {...}} or the bare job) on
                                        this machine: local storage, a loopback receiver for the
                                        callbacks, no GPU or weights needed (the sample's masks)
  python main.py                        Runpod Serverless (the Docker image's command); needs the
                                        Runpod environment or one of the runpod SDK's flags below
  python main.py --adapter queue_pull   pull jobs from a Cloudflare Queue (CF_ACCOUNT_ID,
                                        CF_QUEUE_ID, CF_API_TOKEN); --once drains it and exits

the runpod SDK's flags (passed through to it):
  --test_input '<job JSON>'             run one job through the Runpod handler and exit
  --rp_serve_api                        serve a local copy of the endpoint's API
                                        (--rp_api_port 8000, --rp_api_host localhost)
  --rp_log_level LEVEL, --rp_debugger   the SDK's own logging and debugger

settings that matter (environment or gpu-worker/.env; all in docs/CONTRACT.md and .env.example):
  SEGMENTER=files SEGMENTER_MASKS_DIR=samples/masks   masks from files instead of SAM3
  SAM3_MODEL, MODEL_CACHE_DIR, HF_TOKEN                the SAM3 weights
  STORAGE_S3_ENDPOINT, STORAGE_ACCESS_KEY, STORAGE_SECRET_KEY, STORAGE_BUCKET
                                                      R2 (unset: the local folder STORAGE_LOCAL_DIR)
  GPU_CALLBACK_SECRET, CALLBACK_ALLOWED_HOSTS          signing and sending callbacks
  WORKER_ADAPTER=runpod|queue_pull                     the run mode without --adapter
  LOG_FORMAT=json|text, LOG_LEVEL                      log lines on stderr (text for --event)

exit status of --event:
  0  every item done
  1  some item failed (the report names each item's error_code)
  2  the event file, the job or a setting is unusable; nothing was run
  3  every item ended, but a callback was not delivered
Other modes exit 2 when a setting is unusable or missing.
"""

# Where the runpod SDK finds work: Runpod's job endpoint, a realtime port, its local flags, or
# the test_input.json file it reads when given nothing else.
RUNPOD_ENVIRONMENT = ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_REALTIME_PORT")
RUNPOD_FLAGS = ("--test_input", "--rp_serve_api")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--event", type=Path, metavar="FILE", help="run one job from this JSON file locally and exit")
    parser.add_argument("--adapter", choices=["runpod", "queue_pull"], help="the run mode (default: WORKER_ADAPTER)")
    parser.add_argument("--once", action="store_true", help="queue_pull: drain what the queue holds now, then exit")
    return parser.parse_known_args(argv)


def load_settings() -> Settings | str:
    """The settings, or a sentence naming each unusable one (never its value: it may be a secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors())
        return f"A setting is unusable ({problems}). See .env.example for each setting's values."


def runpod_has_work(flags: list[str], cwd: Path) -> bool:
    return (any(os.environ.get(name) for name in RUNPOD_ENVIRONMENT)
            or any(flag.split("=")[0] in RUNPOD_FLAGS for flag in flags)
            or (cwd / "test_input.json").is_file())


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    settings = load_settings()
    if isinstance(settings, str):
        print(settings, file=sys.stderr)
        return 2
    configure_logging(settings.log_level, fmt=settings.log_format or ("text" if args.event else "json"))
    if args.event is not None:
        from local_run import run_event_file

        return asyncio.run(run_event_file(args.event, settings))
    adapter = args.adapter or settings.worker_adapter
    if adapter == "queue_pull":
        from adapters import queue_pull
        from adapters.queue_api import missing_settings
        from engine.wiring import build_pipeline

        missing = missing_settings(settings)
        if missing:
            print(f"The queue pull adapter needs {', '.join(missing)} (the Cloudflare account, the queue and an "
                  "API token with Queues read and write); set them in the environment or gpu-worker/.env.",
                  file=sys.stderr)
            return 2
        return queue_pull.main(settings, build_pipeline, once=args.once)
    if not runpod_has_work(rest, Path.cwd()):
        print("Not running on Runpod (RUNPOD_WEBHOOK_GET_JOB is not set) and no job was given. Run one job "
              "locally with `python main.py --event sample.json`, through the Runpod handler with "
              "`python main.py --test_input '<job JSON>'`, or pull from a queue with "
              "`python main.py --adapter queue_pull`; `python main.py --help` lists the run modes.", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *rest]  # the runpod SDK reads its own flags from sys.argv
    from adapters import runpod_serverless

    runpod_serverless.start(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

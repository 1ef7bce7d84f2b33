"""``main.py --event FILE``: one job on this machine, with no cloud, GPU or weights needed.

What it adds around the normal pipeline, and says so on screen:
- a loopback receiver that verifies the signed callbacks, when the job's callback_url is on
  127.0.0.1/localhost (that host is then allowed, as CALLBACK_ALLOWED_HOSTS would allow it);
- a throwaway callback secret when GPU_CALLBACK_SECRET is unset;
- short callback retries (0.5 s, 1 s) unless CALLBACK_BACKOFF is set;
- when SAM3 weights are not available, the file segmenter over samples/masks (the masks the
  sample photo was rendered with) instead of failing every item.

The run's report goes to stdout, log lines to stderr. The exit status (``exit_status``) tells a
script how the job ended: 0 every item done, 1 some item failed, 2 the file or the job is
unusable, 3 every item ended but a callback was not delivered.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from engine.errors import JobParseError
from engine.job import unwrap_event
from engine.receiver import LoopbackReceiver
from engine.report import JobResult
from engine.segmenter import FileMaskSegmenter, UnavailableSegmenter
from engine.settings import PACKAGE_DIR, Settings
from engine.storage import LocalStorage
from engine.wiring import build_pipeline, build_segmenter

SAMPLE_MASKS = PACKAGE_DIR / "samples" / "masks"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

EXIT_DONE, EXIT_ITEM_FAILED, EXIT_UNUSABLE, EXIT_UNDELIVERED = 0, 1, 2, 3


def exit_status(result: JobResult) -> int:
    """The process's exit status for a job's result: an unusable job first, then failed items,
    then undelivered callbacks."""
    if result.error is not None or all(i.report.error_code == "INVALID_MESSAGE" for i in result.items):
        return EXIT_UNUSABLE
    if not result.all_done:
        return EXIT_ITEM_FAILED
    if result.undelivered:
        return EXIT_UNDELIVERED
    return EXIT_DONE


def say(line: str = "") -> None:
    print(line, flush=True)


async def run_event_file(path: Path, settings: Settings) -> int:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        job = unwrap_event(raw)
    except (OSError, ValueError, JobParseError) as exc:
        say(f"Cannot read the event file {path}: {exc}")
        return EXIT_UNUSABLE

    updates: dict[str, Any] = {}
    secret = settings.gpu_callback_secret.get_secret_value() if settings.gpu_callback_secret else None
    if secret is None:
        secret = secrets.token_hex(16)
        updates["gpu_callback_secret"] = SecretStr(secret)
        say("GPU_CALLBACK_SECRET is not set: signing callbacks with a throwaway secret for this run.")
    if "callback_backoff" not in settings.model_fields_set:
        updates["callback_backoff"] = [0.5, 1.0]

    receiver = None
    url = str(job.get("callback_url", ""))
    parts = urlsplit(url)
    if parts.hostname in LOOPBACK and parts.port:
        receiver = _listen(secret, parts.hostname, parts.port)
        if receiver.port != parts.port:
            say(f"Port {parts.port} is taken: callbacks of this run go to port {receiver.port} instead.")
            job["callback_url"] = parts._replace(netloc=f"{parts.hostname}:{receiver.port}").geturl()
        updates["callback_allowed_hosts"] = [*settings.callback_allowed_hosts, f"{parts.hostname}:{receiver.port}"]
        say(f"Listening for callbacks on {receiver.url} (signatures checked with verify_callback).")
    settings = settings.model_copy(update=updates)

    segmenter = build_segmenter(settings)
    if isinstance(segmenter, UnavailableSegmenter) and SAMPLE_MASKS.is_dir():
        say("SAM3 weights are not available (set SAM3_MODEL / MODEL_CACHE_DIR, or run python -m scripts.fetch_weights);")
        say(f"using the file segmenter over {SAMPLE_MASKS.relative_to(PACKAGE_DIR)}/ (the sample's known masks).")
        segmenter = FileMaskSegmenter(SAMPLE_MASKS)
    pipeline = build_pipeline(settings, segmenter=segmenter)

    if receiver is not None:
        with receiver:
            result = await pipeline.run_job(raw)
    else:
        result = await pipeline.run_job(raw)

    say()
    say("Result:")
    say(json.dumps(result.to_dict(), indent=2))
    if isinstance(pipeline.storage, LocalStorage):
        _show_files(pipeline.storage, job, result)
    if receiver is not None:
        say()
        say(f"Callbacks received on {receiver.url}:")
        for cb in receiver.received:
            payload = cb.payload
            state = "signature verified" if cb.verified else "SIGNATURE INVALID"
            say(f"  idx {payload.get('idx')}: {payload.get('status')} ({payload.get('error_code') or 'ok'}), "
                f"Idempotency-Key {cb.headers.get('Idempotency-Key')}, {state}")
    if result.undelivered:
        say(f"Callbacks NOT delivered for items {result.undelivered} (see the callback.end log lines for why).")
    failed = [i.idx for i in result.items if i.report.status != "done"]
    if failed:
        say(f"Items failed: {failed} (each one's error_code is in the result above).")
    return exit_status(result)


def _listen(secret: str, host: str, port: int) -> LoopbackReceiver:
    """A receiver on the callback URL's own port, or on a free one when that port is taken."""
    try:
        return LoopbackReceiver(secret, host=host, port=port)
    except OSError:
        return LoopbackReceiver(secret, host=host, port=0)


def _show_files(storage: LocalStorage, job: dict[str, Any], result: JobResult) -> None:
    user, job_id = job.get("user_id"), job.get("job_id")
    say()
    say(f"Files in the local store ({storage.root}):")
    for prefix in (f"outputs/{user}/{job_id}", f"previews/{user}/{job_id}", f"masks/{user}/{job_id}"):
        folder = storage.root / prefix
        for file in sorted(folder.glob("*")) if folder.is_dir() else []:
            say(f"  {file}  ({file.stat().st_size} bytes)")

"""A stream of small jobs through the runpod SDK's production loop: N one-photo jobs queued on a
job API on loopback (tests/fake_runpod_api.py), served by one worker process running the SDK's
loop as on Runpod (``adapters.runpod_serverless.serve``), next to model-only in the same run.

    python -m bench.bench_stream --model simulated --device-ms 156   # a device at the H100's speed
    python -m bench.bench_stream --model tiny                         # tiny random-weight SAM3 on the CPU
    python -m bench.bench_stream --model simulated --job-concurrency 1,2,4

Every variant runs in its own process against the same moto S3 server, job API and callback
receivers, which live in this parent process:

- ``model``: the segmenter alone on the photos already decoded (bench_e2e's model-only child).
- ``stream``: the worker, taking the queued jobs ``JOB_CONCURRENCY`` at a time (plus the jobs
  left with callbacks only), with a receiver that answers at once, then one that takes
  ``--slow-receiver-s`` to answer each callback.

Throughput is jobs' photos over the time from the first job taken to the last result posted;
device busy share is the segmenter's time at work over that time; peak RSS is the worker
process's peak during the stream (after set-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_e2e import (BUCKET, CALLBACK_SECRET, KEY_ID, KEY_SECRET, MALLOC_ENV, ROOT, job, make_photos,
                             run_child, start_s3)
from bench.devices import BusyClock, load_segmenter
from bench.measure import cpu_seconds, reset_peak_rss, status_mb

RESULT_MARK = "bench_stream_result "


# -- parent ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--distinct-photos", type=int, default=8, help="photos rendered; jobs reuse them in turn")
    parser.add_argument("--model", choices=["tiny", "full", "simulated"], default="simulated")
    parser.add_argument("--device-ms", type=float, default=156.0)
    parser.add_argument("--device-shared", type=float, default=0.5)
    parser.add_argument("--job-concurrency", default="2", help="comma-separated JOB_CONCURRENCY values to run")
    parser.add_argument("--slow-receiver-s", type=float, default=2.0, help="0: the instant receiver only")
    parser.add_argument("--in-flight", type=int, default=4, help="model-only: photos per segmentation call")
    parser.add_argument("--sim-masks", choices=["none", "blobs"], default="none",
                        help="--model simulated: what the device finds (blobs: masks over most of the frame)")
    parser.add_argument("--sim-coverage", type=float, default=0.65, help="--sim-masks blobs: share of the frame")
    parser.add_argument("--child")
    parser.add_argument("--endpoint")
    parser.add_argument("--checkpoint")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--receiver")
    args = parser.parse_args()
    if args.child == "steps":
        photo_steps(args)
        return
    if args.child:
        child(args)
        return
    args.keep_top, args.edit_backend = None, None
    run(args)


def run(args: argparse.Namespace) -> None:
    from engine.receiver import LoopbackReceiver

    photos_dir = ROOT / "bench" / "out" / "photos"
    photos = make_photos(args.distinct_photos, args.megapixels, photos_dir)
    server, endpoint, s3 = start_s3()
    rows: dict[str, dict] = {}
    with (tempfile.TemporaryDirectory() as tmp, LoopbackReceiver(CALLBACK_SECRET) as instant,
          LoopbackReceiver(CALLBACK_SECRET, answer_after_s=args.slow_receiver_s) as slow):
        checkpoint = {"full": "full-random", "simulated": "simulated"}.get(args.model, "")
        if args.model == "tiny":
            from tests.sam3_tiny import save_tiny_sam3

            checkpoint = str(save_tiny_sam3(Path(tmp) / "tiny"))
        args.photos_dir = photos_dir
        rows["model"] = run_child("model", args, endpoint, instant.url, checkpoint, photos_dir, len(photos))
        s3.put_object(Bucket=BUCKET, Key=STEPS_INPUT, Body=photos[0])
        rows["steps"] = run_steps(endpoint)
        for concurrency in (int(c) for c in args.job_concurrency.split(",")):
            receivers = [("instant", instant)] + ([(f"{args.slow_receiver_s:g} s", slow)] if args.slow_receiver_s else [])
            for label, receiver in receivers:
                name = f"stream, JOB_CONCURRENCY {concurrency}, receiver {label}"
                rows[name] = run_stream(args, s3, endpoint, checkpoint, photos, receiver, concurrency)
    server.stop()
    report(args, rows)


def run_stream(args: argparse.Namespace, s3, endpoint: str, checkpoint: str, photos: list[bytes], receiver,
               concurrency: int) -> dict:
    """Queue the jobs, start a worker on them, stop it (SIGTERM) once every result is posted."""
    from tests.fake_runpod_api import FakeJobApi

    run_id = f"{concurrency}_{receiver.port}_{int(time.time() * 1000)}"
    with FakeJobApi(poll_s=1.0) as api:
        ids = []
        for n in range(args.jobs):
            job_id = f"stream_{run_id}_{n}"
            s3.put_object(Bucket=BUCKET, Key=f"inputs/u_bench/{job_id}/0.jpg", Body=photos[n % len(photos)])
            ids.append(api.add_job(job(job_id, 1, receiver.url, 1)))
        before = len(receiver.received)
        cmd = [sys.executable, "-m", "bench.bench_stream", "--child", "stream", "--endpoint", endpoint,
               "--checkpoint", checkpoint, "--model", args.model, "--device-ms", str(args.device_ms),
               "--device-shared", str(args.device_shared), "--concurrency", str(concurrency),
               "--sim-masks", args.sim_masks, "--sim-coverage", str(args.sim_coverage),
               "--receiver", receiver.url]
        env = {**MALLOC_ENV, **os.environ, **api.env(), "LOG_LEVEL": "warning", "RUNPOD_LOG_LEVEL": "ERROR"}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            api.wait(lambda: all(i in api.results for i in ids), timeout=3600)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"the worker exited {proc.returncode}:\n{err[-4000:]}")
        jobs = [api.jobs[i] for i in ids]
    got = receiver.received[before:]
    assert len(got) == args.jobs and all(cb.verified and cb.payload["status"] == "done" for cb in got), "callbacks"
    assert all(j.result["output"]["status"] == "completed" for j in jobs), "job results"
    line = next(l for l in reversed(out.splitlines()) if l.startswith(RESULT_MARK))
    row = json.loads(line.removeprefix(RESULT_MARK))
    wall = max(j.done_at for j in jobs) - min(j.taken_at for j in jobs)
    row.update(wall_s=wall, photos_per_s=args.jobs / wall, device_busy=row["busy_s"] / wall,
               cpu_s_per_photo=row["cpu_s"] / args.jobs, photos=args.jobs,
               most_jobs_at_once=most_at_once([(j.taken_at, j.done_at) for j in jobs]))
    return row


def run_steps(endpoint: str) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_stream", "--child", "steps", "--endpoint", endpoint]
    out = subprocess.run(cmd, cwd=ROOT, env={**MALLOC_ENV, **os.environ, "LOG_LEVEL": "warning"},
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the steps child failed:\n{out.stderr[-4000:]}")
    return json.loads(next(l for l in reversed(out.stdout.splitlines()) if l.startswith(RESULT_MARK))
                      .removeprefix(RESULT_MARK))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most jobs held at the same moment (taken, result not yet posted)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    held = peak = 0
    for _, step in events:
        held += step
        peak = max(peak, held)
    return peak


def report(args: argparse.Namespace, rows: dict[str, dict]) -> None:
    model = rows["model"]
    device = model["device"]
    lines = [f"# Stream benchmark: {args.jobs} one-photo jobs at {args.megapixels:g} MP through the runpod SDK's loop",
             "", f"Device: {device}; host: {platform.machine()}, {os.cpu_count()} cores, shared with other work.",
             "", f"Command: `python -m bench.bench_stream {' '.join(sys.argv[1:])}`",
             "", "Jobs are queued on a job API on loopback and taken by one worker process running the SDK's "
                 "production loop; wall time runs from the first job taken to the last result posted. Device "
                 "busy: the segmenter's time at work over that wall time. Peak RSS: the worker process during "
                 "the stream (after set-up). Host CPU: the worker process's, per photo (the S3 server, job API "
                 "and receivers run in the parent process).", "",
             "| variant | wall s | photos/s | vs model-only | device busy | most jobs at once | host CPU s/photo "
             "| job peak RSS MB |", "|---|---|---|---|---|---|---|---|",
             f"| model only | {model['wall_s']:.2f} | {model['photos_per_s']:.3f} | 100% | - | - | "
             f"{model['cpu_s_per_photo']:.2f} | {model['job_peak_rss_mb']:.0f} |"]
    for name, r in rows.items():
        if name not in ("model", "steps"):
            lines.append(f"| {name} | {r['wall_s']:.2f} | {r['photos_per_s']:.3f} | "
                         f"{r['photos_per_s'] / model['photos_per_s']:.0%} | {r['device_busy']:.0%} | "
                         f"{r['most_jobs_at_once']} | {r['cpu_s_per_photo']:.2f} | {r['job_peak_rss_mb']:.0f} |")
    lines += ["", "Host CPU of one photo's work, step by step (the first photo, one step at a time in a process "
              "of its own, median of 5, `--child steps`). Skipped: what the same step costs when it works "
              "through the six empty masks as it did before (fit_masks over all of them, the edit over "
              "empty regions, a PNG per mask).", "", "| step | CPU s now | CPU s when not skipped |", "|---|---|---|"]
    for step, (now, full) in rows["steps"].items():
        lines.append(f"| {step} | {now:.3f} | {'-' if full is None else f'{full:.3f}'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    slug = device.lower().replace(" ", "-")
    if args.model == "simulated":
        slug = f"{args.device_ms:g}ms_{platform.machine()}_{os.cpu_count()}cores"
    (ROOT / "bench" / "results" / f"stream_{args.model}_{slug}.md").write_text(text)


# -- the worker --------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    from adapters.runpod_serverless import serve
    from engine.settings import Settings
    from engine.wiring import build_pipeline

    settings = Settings(
        storage_s3_endpoint=args.endpoint, storage_bucket=BUCKET, storage_access_key=KEY_ID,
        storage_secret_key=KEY_SECRET, storage_region="us-east-1", gpu_callback_secret=CALLBACK_SECRET,
        callback_allowed_hosts=args.receiver.removeprefix("http://"), sam3_model=args.checkpoint, segmenter="sam3",
        job_concurrency=args.concurrency,
    )
    args.keep_top = None
    segmenter = load_segmenter(args, settings)
    timed = BusyClock(segmenter)
    pipeline = build_pipeline(settings, segmenter=timed)
    setup_rss_mb = reset_peak_rss()
    cpu_before = cpu_seconds()
    serve(settings, pipeline)
    print(RESULT_MARK + json.dumps({
        "busy_s": timed.busy_s, "cpu_s": cpu_seconds() - cpu_before, "device": segmenter.device_label,
        "setup_rss_mb": setup_rss_mb, "job_peak_rss_mb": status_mb("VmHWM") if setup_rss_mb else 0.0,
    }), flush=True)


STEPS_INPUT = "inputs/u_bench/steps/0.jpg"


def photo_steps(args: argparse.Namespace) -> None:
    """Host CPU of each step of one photo's ``full`` item with nothing found, through the worker's
    own functions and S3 client; beside the mask steps, what they cost worked through in full."""
    import asyncio
    import statistics

    import numpy as np

    from engine.applier import apply_edits_with
    from engine.job import parse_job
    from engine.pipeline import edits_for
    from engine.plan_masks import HostFitter, fit_masks
    from engine.png import blank_png, write_png
    from engine.postprocess import decode_image, encode_instances, encode_mask, encode_png, encode_thumbnail
    from engine.segmenter import ConceptMasks
    from engine.settings import Settings
    from engine.stages import plan_job
    from engine.storage import S3Storage

    settings = Settings(storage_s3_endpoint=args.endpoint, storage_bucket=BUCKET, storage_access_key=KEY_ID,
                        storage_secret_key=KEY_SECRET, storage_region="us-east-1")
    storage = S3Storage.from_settings(settings)
    plan = plan_job(parse_job(job("steps", 1, "https://receiver.example", 1))).plan
    data = asyncio.run(storage.get(STEPS_INPUT, settings.max_input_bytes))
    image = decode_image(data, max_pixels=settings.max_input_pixels, max_side=settings.max_output_side)
    found = {c.name: ConceptMasks(c.name, np.zeros(image.rgb.shape[:2], bool)) for c in plan.concepts_to_prompt()}
    ready = fit_masks(image.rgb, found, plan)
    png = encode_png(image.rgb, None, None, settings.png_compress_level)
    masks = {n: blank_png(image.size) for n in ready}

    async def reads() -> None:
        await storage.head("outputs/u_bench/steps/0_result.png")
        await storage.get(STEPS_INPUT, settings.max_input_bytes)

    async def writes() -> None:
        for name, blank in masks.items():
            await storage.put(f"masks/u_bench/steps/0_{name}.png", blank, "image/png")
        await storage.put("masks/u_bench/steps/0_instances.json", encode_instances(ready, image.size), "application/json")
        await storage.put("previews/u_bench/steps/0_thumb.jpg", encode_thumbnail(image.rgb, 300), "image/jpeg")
        await storage.put("outputs/u_bench/steps/0_result.png", png, "image/png", {"fingerprint": "f"})

    def cpu(fn) -> float:
        times = []
        for _ in range(5):
            before = cpu_seconds()
            fn()
            times.append(cpu_seconds() - before)
        return statistics.median(times)

    steps = {
        "S3: head the marker, get the input (3 MB)": (cpu(lambda: asyncio.run(reads())), None),
        "decode (JPEG, 12 MP)": (cpu(lambda: decode_image(data, max_pixels=settings.max_input_pixels,
                                                          max_side=settings.max_output_side)), None),
        "masks made ready (6 empty)": (cpu(lambda: fit_masks(image.rgb, found, plan)),
                                       cpu(lambda: [HostFitter(image.rgb).fit(m, False) for m in found.values()])),
        "edit (every rule's mask empty)": (0.0, cpu(lambda: apply_edits_with(image.rgb, *edits_for(plan, ready)))),
        "mask PNGs (6 empty) and instances file": (
            cpu(lambda: ([encode_mask(m.union) for m in ready.values()], encode_instances(ready, image.size))),
            cpu(lambda: ([write_png(np.multiply(m.union, 255, dtype=np.uint8)) for m in ready.values()],
                         encode_instances(ready, image.size)))),
        "result PNG": (cpu(lambda: encode_png(image.rgb, None, None, settings.png_compress_level)), None),
        "thumbnail JPEG": (cpu(lambda: encode_thumbnail(image.rgb, settings.thumbnail_side)), None),
        "S3: 9 uploads (masks, instances, thumbnail, result)": (cpu(lambda: asyncio.run(writes())), None),
    }
    assert not any(m.holds_pixels() for m in ready.values())
    print(RESULT_MARK + json.dumps(steps), flush=True)


if __name__ == "__main__":
    main()

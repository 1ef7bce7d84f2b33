"""End-to-end throughput: a job of N photos through an S3 server and a callback receiver on
loopback, the worker's pipeline next to a naive sequential one, in the same run.

    python -m bench.bench_e2e                      # CPU: tiny random-weight SAM3, 16 photos at 12 MP
    python -m bench.bench_e2e --model full         # GPU: full-size Sam3Config(), random weights, bf16
    python -m bench.bench_e2e --model simulated --variants model,pipeline --device-ms 156
                                                   # any host: a device that takes 156 ms a photo

Each variant runs in its own process (so its peak memory is its own) against the same moto S3
server and loopback receiver, which live in this parent process:

- ``pipeline``: the worker as deployed (``Pipeline``: photos in flight overlap download, decode,
  segmentation, edits, encode, upload and callbacks; one vision pass per photo; batched photos).
- ``naive``: one photo after another: download, decode, segment with one full model forward per
  prompt (the usage in the transformers docs), edits in full-frame float, PNG ``optimize=True``,
  upload, callback.
- ``model``: the segmenter alone on photos already decoded in memory (the ceiling).

``--model simulated`` swaps SAM3 for a stand-in device that sleeps ``--device-ms`` per photo (no
host CPU, like a GPU kernel) and finds nothing (as full-size random weights do at the presets'
thresholds), or, with ``--sim-masks blobs``, hands back for every concept a smooth blob covering
``--sim-coverage`` of the frame (as the tiny model's and the kept detections' masks do), so the
simulated run pays for the edits as a real one does. The blobs are made once, before the job. Like SAM3 it spends part of that (``--device-shared``, default half) on passes
shared by the batch, then hands over each photo's masks in turn. It asks whether the pipeline
keeps a device of a given speed busy on this host, the issue's "the GPU never waits for I/O", on
a machine without a GPU. 156 ms is the H100's measured model-only time per 12 MP photo
(``e2e_full_nvidia-h100-80gb-hbm3.md``: 6.40 photos/s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.devices import BusyClock, SimulatedDevice, load_segmenter
from bench.measure import cpu_seconds, reset_peak_rss, status_mb

ROOT = Path(__file__).resolve().parent.parent

BUCKET = "bench-bucket"
KEY_ID, KEY_SECRET = "bench-key", "bench-secret"
CALLBACK_SECRET = "bench-callback-secret"
CONCEPTS = {"Wall": {"action": "recolor", "value": "sage"}, "Floor": {"action": "recolor", "value": "walnut"},
            "Ceiling": {"action": "tone", "value": "bright"}, "Furniture": {"action": "remove"}}
PROTECT = ["Window", "Frame_Molding"]


# -- parent ------------------------------------------------------------------------------------


def make_photos(count: int, megapixels: float, folder: Path) -> list[bytes]:
    """Rendered rooms, upscaled to the size asked for, with sensor-like noise, as JPEG q90."""
    import cv2
    from PIL import Image

    from devtools.scenes import render_room

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(count):
        path = folder / f"{width}x{height}_{i}.jpg"
        if not path.exists():
            rgb, _ = render_room(800, 600, seed=i)
            big = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            big += np.random.default_rng(i).normal(0, 2.5, big.shape).astype(np.float32)
            Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=90)
        photos.append(path.read_bytes())
    return photos


def job(job_id: str, count: int, receiver_url: str, in_flight: int) -> dict:
    return {
        "job_id": job_id, "user_id": "u_bench", "preset": "interior", "stage": "full",
        "concepts": CONCEPTS, "protect": PROTECT,
        "items": [{"idx": i, "input_key": f"inputs/u_bench/{job_id}/{i}.jpg",
                   "output_key": f"outputs/u_bench/{job_id}/{i}_result.png",
                   "preview_key": f"previews/u_bench/{job_id}/{i}_thumb.jpg"} for i in range(count)],
        "callback_url": f"{receiver_url}/jobs/{job_id}/callback", "idempotency_prefix": job_id,
        "batch_concurrency": in_flight,
    }


# The allocator settings of the Docker image (see the Dockerfile): fewer malloc arenas, and large
# blocks returned to the system when freed, so the process's peak follows what it really holds.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "4194304"}


def run_child(variant: str, args: argparse.Namespace, endpoint: str, receiver_url: str, checkpoint: str,
              photos_dir: Path, count: int) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_e2e", "--child", variant, "--endpoint", endpoint, "--receiver", receiver_url,
           "--checkpoint", checkpoint, "--photos", str(count), "--in-flight", str(args.in_flight),
           "--photos-dir", str(photos_dir), "--model", args.model, "--device-ms", str(args.device_ms),
           "--device-shared", str(args.device_shared), "--sim-masks", args.sim_masks,
           "--sim-coverage", str(args.sim_coverage)]
    if args.edit_backend:
        cmd += ["--edit-backend", args.edit_backend]
    if args.keep_top:
        cmd += ["--keep-top", str(args.keep_top)]
    env = {**MALLOC_ENV, **os.environ, "LOG_LEVEL": "warning"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_s3():
    """moto's S3 server on loopback with the benchmark's bucket: (server, endpoint, client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=KEY_ID, aws_secret_access_key=KEY_SECRET)
    s3.create_bucket(Bucket=BUCKET)
    return server, endpoint, s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--model", choices=["tiny", "full", "simulated"], default="tiny")
    parser.add_argument("--device-ms", type=float, default=156.0, help="--model simulated: device time per photo")
    parser.add_argument("--device-shared", type=float, default=0.5,
                        help="--model simulated: share of it spent in passes shared by the batch, before any photo's "
                             "masks are ready (the rest is per photo, handed over one at a time)")
    parser.add_argument("--sim-masks", choices=["none", "blobs"], default="none",
                        help="--model simulated: what the device finds (blobs: masks over most of the frame)")
    parser.add_argument("--sim-coverage", type=float, default=0.65, help="--sim-masks blobs: share of the frame")
    parser.add_argument("--edit-backend", default=None,
                        help="comma-separated APPLY_BACKEND values; the pipeline variant runs once per value "
                             "(side by side in one run)")
    parser.add_argument("--variants", default="model,pipeline,naive")
    parser.add_argument("--keep-top", type=int, default=None,
                        help="every prompt keeps its N best detections (threshold 0): random weights then "
                             "give masks, so the edits cost what they would on real photos (model and pipeline)")
    parser.add_argument("--naive-photos", type=int, default=None,
                        help="photos for the naive variant (it is sequential: its photos/s does not depend on the count)")
    parser.add_argument("--child")
    parser.add_argument("--endpoint")
    parser.add_argument("--receiver")
    parser.add_argument("--checkpoint")
    parser.add_argument("--photos-dir")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    from engine.receiver import LoopbackReceiver

    photos_dir = ROOT / "bench" / "out" / "photos"
    photos = make_photos(args.photos, args.megapixels, photos_dir)
    server, endpoint, s3 = start_s3()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, LoopbackReceiver(CALLBACK_SECRET) as receiver:
        checkpoint = {"full": "full-random", "simulated": "simulated"}.get(args.model, "")
        if args.model == "tiny":
            from tests.sam3_tiny import save_tiny_sam3

            checkpoint = str(save_tiny_sam3(Path(tmp) / "tiny"))
        for variant in expand_variants(args):
            job_id = f"job_{variant.replace('-', '_')}"
            count = args.naive_photos if variant == "naive" and args.naive_photos else args.photos
            for i, data in enumerate(photos[:count]):
                s3.put_object(Bucket=BUCKET, Key=f"inputs/u_bench/{job_id}/{i}.jpg", Body=data)
            before = len(receiver.received)
            results[variant] = run_child(variant, args, endpoint, receiver.url, checkpoint, photos_dir, count)
            results[variant]["photos"] = count
            if variant != "model":
                got = receiver.received[before:]
                assert len(got) == count and all(cb.verified for cb in got), f"{variant}: callbacks"
                assert all(cb.payload["status"] == "done" for cb in got), f"{variant}: items failed"
    server.stop()
    report(args, results)


def expand_variants(args: argparse.Namespace) -> list[str]:
    """``pipeline`` once per ``--edit-backend`` value (``pipeline-numpy``, ``pipeline-torch``)."""
    backends = args.edit_backend.split(",") if args.edit_backend else []
    out = []
    for variant in args.variants.split(","):
        out += [f"{variant}-{b}" for b in backends] if variant == "pipeline" and backends else [variant]
    return out


def report(args: argparse.Namespace, results: dict) -> None:
    device = results[next(iter(results))]["device"]
    keep = f", every prompt keeps its {args.keep_top} best detections" if args.keep_top else ""
    if args.model == "simulated" and args.sim_masks == "blobs":
        keep = f", every concept a blob over {args.sim_coverage:.0%} of the frame"
    model = f"a simulated device ({args.device_ms:g} ms a photo)" if args.model == "simulated" else f"{args.model} SAM3"
    lines = [f"# End-to-end benchmark: {args.photos} photos at {args.megapixels:g} MP, "
             f"{args.in_flight} in flight, {model}{keep}",
             "", f"Device: {device}; host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
             "", f"Command: `python -m bench.bench_e2e {' '.join(sys.argv[1:])}`",
             "", "Memory: RSS after set-up (model loaded), the peak during the job, and the process's",
             "peak including set-up.", "",
             "Host CPU s/photo: CPU time (all threads) the variant's process used during the job, per "
             "photo; the S3 server and the receiver run in the parent process and are not counted.", "",
             "| variant | wall s | photos/s | host CPU s/photo | RSS after set-up MB | job peak RSS MB "
             "| process peak RSS MB | peak GPU MB | vs naive |", "|---|---|---|---|---|---|---|---|---|"]
    naive = results.get("naive", {}).get("photos_per_s")
    for name, r in results.items():
        ratio = f"{r['photos_per_s'] / naive:.2f}x" if naive else "-"
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['photos_per_s']:.3f} | {r['cpu_s_per_photo']:.2f} | "
                     f"{r['setup_rss_mb']:.0f} | "
                     f"{r['job_peak_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r.get('peak_gpu_mb', 0):.0f} | {ratio} |")
    for name in (n for n in results if n.startswith("pipeline")):
        label = "Pipeline" if name == "pipeline" else f"Pipeline with APPLY_BACKEND={name.removeprefix('pipeline-')}"
        if "model" in results:
            share = results[name]["photos_per_s"] / results["model"]["photos_per_s"]
            lines += ["", f"{label}: throughput {share:.0%} of model-only throughput."]
        if "editor_cpu_s_per_photo" in results[name]:
            r = results[name]
            inside = r["editor_cpu_s_per_photo"]
            lines += ["", f"{label}: host CPU s/photo in the editor's mask fits and edits {inside:.2f}, outside "
                          f"them {r['cpu_s_per_photo'] - inside:.2f}"
                      + (f"; {r['torch_calls_per_photo']:.0f} torch calls a photo (each about one kernel "
                         "launch on a GPU)" if r.get("torch_calls_per_photo") else "") + "."]
        if "device_busy" in results[name]:
            lines += ["", f"{label}: the segmenter was at work {results[name]['device_busy']:.0%} of the wall time "
                          "(its calls, start to last photo handed over)."]
    if "coverage" in results.get("model", {}):
        lines += ["", "Share of the frame each concept's mask covered (mean over photos; random weights "
                      "decide this, and with it how much the edits cost): "
                  + ", ".join(f"{name} {share:.0%}" for name, share in results["model"]["coverage"].items()) + "."]
    if args.naive_photos and "naive" in results:
        lines += ["", f"The naive variant ran {args.naive_photos} of the photos (it is sequential, so its "
                      "photos per second do not depend on how many)."]
    lines += ["", "Seconds per stage, summed over photos (async stages include time spent waiting "
                  "for their turn):", "", "| variant | " + " | ".join(STAGES) + " |",
              "|---|" + "---|" * len(STAGES)]
    for name, r in results.items():
        if "stages" in r:
            lines.append(f"| {name} | " + " | ".join(f"{r['stages'].get(s, 0):.2f}" for s in STAGES) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    slug = device.lower().replace(" ", "-")
    suffix = f"_keep{args.keep_top}" if args.keep_top else ""
    if args.model == "simulated" and args.sim_masks != "none":
        suffix += f"_{args.sim_masks}"
    if args.model == "simulated":
        slug = f"{args.device_ms:g}ms_{platform.machine()}_{os.cpu_count()}cores"
    (ROOT / "bench" / "results" / f"e2e_{args.model}_{slug}{suffix}.md").write_text(text)


STAGES = ["download", "decode", "segment", "fit_masks", "apply", "encode", "upload", "callback"]


# -- children ----------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> dict:
    import asyncio

    from engine.settings import Settings

    settings = Settings(
        storage_s3_endpoint=args.endpoint, storage_bucket=BUCKET, storage_access_key=KEY_ID,
        storage_secret_key=KEY_SECRET, storage_region="us-east-1", gpu_callback_secret=CALLBACK_SECRET,
        callback_allowed_hosts=args.receiver.removeprefix("http://"), batch_concurrency=args.in_flight,
        sam3_model=args.checkpoint, segmenter="sam3",
        **({"apply_backend": args.child.split("-", 1)[1]} if "-" in args.child else {}),
    )
    if args.child.endswith("-torch"):  # a torch op's CPU on its calling thread (EditorClock counts it there)
        import torch

        torch.set_num_threads(1)
    segmenter = load_segmenter(args, settings)
    if isinstance(segmenter, SimulatedDevice):  # its masks made before the timing starts
        from PIL import Image

        with Image.open(sorted(Path(args.photos_dir).glob("*.jpg"))[0]) as first:
            segmenter.found((first.height, first.width), prompts_of()[1])
    device = segmenter.device_label
    setup_rss_mb = reset_peak_rss()
    cpu_before = cpu_seconds()
    if args.child == "model":
        result = bench_model_only(segmenter, args)
    elif args.child.startswith("pipeline"):
        result = asyncio.run(bench_pipeline(segmenter, settings, args))
    else:
        from bench.naive import bench_naive  # imports this module: only in the naive child

        result = bench_naive(segmenter, settings, args)
    result["cpu_s_per_photo"] = (cpu_seconds() - cpu_before) / args.photos
    result["device"] = device
    result["setup_rss_mb"] = setup_rss_mb
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["job_peak_rss_mb"] = status_mb("VmHWM") if setup_rss_mb else result["peak_rss_mb"]
    import torch

    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def prompts_of():
    from engine.job import parse_job
    from engine.rules import make_plan

    plan = make_plan(parse_job(job("job_x", 1, "http://127.0.0.1:1", 1)))
    return plan, plan.concepts_to_find()


def bench_model_only(segmenter, args) -> dict:
    from engine.postprocess import decode_image
    from engine.segmenter import SegmentRequest

    _, concepts = prompts_of()
    images = [decode_image(p.read_bytes(), max_pixels=10**9, max_side=4096).rgb
              for p in sorted(Path(args.photos_dir).glob("*.jpg"))[: args.photos]]
    started = time.perf_counter()
    found = []
    for i in range(0, len(images), args.in_flight):
        found += segmenter.segment([SegmentRequest(im, str(i)) for im in images[i : i + args.in_flight]], concepts)
    wall = time.perf_counter() - started
    # What the (random) weights found decides how much the edits cost: reported beside the times.
    coverage = {c.name: float(np.mean([masks[c.name].union.mean() for masks in found])) for c in concepts}
    return {"wall_s": wall, "photos_per_s": len(images) / wall, "coverage": coverage}


async def bench_pipeline(segmenter, settings, args) -> dict:
    from bench.devices import EditorClock
    from engine.wiring import build_pipeline

    timed = BusyClock(segmenter)
    pipeline = build_pipeline(settings, segmenter=timed)
    pipeline.editor = editor = EditorClock(pipeline.editor)
    started = time.perf_counter()
    job_id = f"job_{args.child.replace('-', '_')}"
    result = (await pipeline.run_job(job(job_id, args.photos, args.receiver, args.in_flight))).to_dict()
    wall = time.perf_counter() - started
    assert result["status"] == "completed", result
    return {"wall_s": wall, "photos_per_s": args.photos / wall, "stages": pipeline.stages.seconds,
            "device_busy": timed.busy_s / wall, "editor_cpu_s_per_photo": editor.cpu_s / args.photos,
            "torch_calls_per_photo": editor.torch_calls / args.photos}


if __name__ == "__main__":
    main()

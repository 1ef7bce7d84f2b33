"""The naive pipeline the end-to-end benchmark compares against: one photo after another, one
full model forward per prompt, edits in full-frame float64, PNG ``optimize=True``."""

from __future__ import annotations

import io
import time

import numpy as np

from bench.bench_e2e import BUCKET, CALLBACK_SECRET, KEY_ID, KEY_SECRET, job, prompts_of


def bench_naive(segmenter, settings, args) -> dict:
    """One photo after another, each stage done the straightforward way."""
    import boto3
    import httpx
    from PIL import Image, ImageOps

    from engine.callback import authorization_header, encode_body
    from engine.logs import StageClock
    from engine.pipeline import edits_for

    plan, concepts = prompts_of()
    spec = job("job_naive", args.photos, args.receiver, 1)
    s3 = boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1",
                      aws_access_key_id=KEY_ID, aws_secret_access_key=KEY_SECRET)
    clock = StageClock()
    started = time.perf_counter()
    with httpx.Client() as http:
        for item in spec["items"]:
            with clock.timed("download"):
                data = s3.get_object(Bucket=BUCKET, Key=item["input_key"])["Body"].read()
            with clock.timed("decode"):
                rgb = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
            with clock.timed("segment"):
                masks = naive_segment(segmenter, rgb, concepts)
            with clock.timed("apply"):
                edits, protect = edits_for(plan, masks)
                result = naive_apply(rgb, edits, protect)
            with clock.timed("encode"):
                png, thumb = io.BytesIO(), io.BytesIO()
                Image.fromarray(result).save(png, format="PNG", optimize=True)
                small = Image.fromarray(result)
                small.thumbnail((300, 300))
                small.save(thumb, format="JPEG", quality=85)
            with clock.timed("upload"):
                s3.put_object(Bucket=BUCKET, Key=item["output_key"], Body=png.getvalue(), ContentType="image/png")
                s3.put_object(Bucket=BUCKET, Key=item["preview_key"], Body=thumb.getvalue(), ContentType="image/jpeg")
            with clock.timed("callback"):
                key = f"job_naive:{item['idx']}:0"
                body = encode_body({"job_id": "job_naive", "idx": item["idx"], "status": "done",
                                    "output_key": item["output_key"], "preview_key": item["preview_key"],
                                    "mask_keys": {}, "instances_key": None, "error": None, "error_code": None,
                                    "idempotency_key": key})
                http.post(spec["callback_url"], content=body, headers={
                    "Content-Type": "application/json", "Idempotency-Key": key,
                    "Authorization": authorization_header(CALLBACK_SECRET, body)}).raise_for_status()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "photos_per_s": args.photos / wall, "stages": clock.seconds}


def naive_segment(segmenter, rgb: np.ndarray, concepts) -> dict:
    """The transformers docs' usage: processor + full model forward + post-processing, per prompt."""
    import torch
    from PIL import Image

    from engine.segmenter import ConceptMasks, instances_from_union

    model, processor = segmenter.model, segmenter.processor
    image = Image.fromarray(rgb)
    masks = {}
    for concept in concepts:
        with torch.inference_mode():
            inputs = processor(images=image, text=concept.prompt, return_tensors="pt").to(segmenter.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(segmenter.dtype)
            outputs = model(**inputs)
            found = processor.post_process_instance_segmentation(
                outputs, threshold=concept.threshold, mask_threshold=0.5,
                target_sizes=inputs.get("original_sizes").tolist())[0]
        union = found["masks"].bool().any(0).cpu().numpy() if len(found["masks"]) else np.zeros(rgb.shape[:2], bool)
        masks[concept.name] = ConceptMasks(concept.name, union, instances_from_union(union, concept.multi_instance))
    return masks


def naive_apply(rgb: np.ndarray, edits, protect) -> np.ndarray:
    """Full-frame float64 edits, one after another (bench_apply's naive version of each edit)."""
    from bench.bench_apply import naive_apply as naive_edit

    protect = np.zeros(rgb.shape[:2], bool) if protect is None else protect
    out = rgb
    for edit in edits:
        if (edit.mask & ~protect).any():
            out = naive_edit(out, edit, protect)
    return out


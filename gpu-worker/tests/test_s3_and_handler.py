"""R2/S3 through boto3 against moto running as a real server on 127.0.0.1, and the Runpod
handler end to end on it with a loopback callback receiver."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from adapters.runpod_serverless import make_handler
from engine.errors import InputNotFound, InputTooLarge, StorageError
from engine.segmenter import FileMaskSegmenter
from engine.storage import S3Storage
from engine.wiring import build_pipeline
from tests.conftest import S3_KEY_ID, S3_SECRET, jpeg_bytes, make_job, make_settings, room_photo, write_masks


def s3_settings(endpoint: str, bucket: str, **kw):
    return make_settings(storage_s3_endpoint=endpoint, storage_bucket=bucket, storage_access_key=S3_KEY_ID,
                         storage_secret_key=S3_SECRET, storage_region="us-east-1", storage_max_attempts=2, **kw)


async def test_s3_storage_round_trip_and_errors(s3_endpoint, s3_bucket):
    client, bucket = s3_bucket
    storage = S3Storage.from_settings(s3_settings(s3_endpoint, bucket))
    sent_headers = []
    storage.client.meta.events.register("before-send.s3.PutObject",
                                        lambda request, **_: sent_headers.append(dict(request.headers)))

    await storage.put("outputs/u/j/0.png", b"\x89PNG-bytes", "image/png", {"fingerprint": "abc"})
    stored = client.get_object(Bucket=bucket, Key="outputs/u/j/0.png")
    assert stored["Body"].read() == b"\x89PNG-bytes" and stored["ContentType"] == "image/png"
    assert await storage.get("outputs/u/j/0.png", 100) == b"\x89PNG-bytes"
    assert await storage.head("outputs/u/j/0.png") == {"fingerprint": "abc"}
    assert await storage.head("outputs/u/j/missing.png") is None
    # R2 compatibility: no flexible checksum headers unless the operation requires them.
    assert not any(k.lower().startswith("x-amz-checksum") or k.lower() == "x-amz-sdk-checksum-algorithm"
                   for k in sent_headers[0])
    # The body is not hashed for the signature (TLS protects it); the headers still are signed.
    headers = {k.lower(): v if isinstance(v, str) else v.decode() for k, v in sent_headers[0].items()}
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert "x-amz-content-sha256" in headers["authorization"]  # among the signed headers

    with pytest.raises(InputNotFound):
        await storage.get("inputs/u/j/nope.jpg", 100)
    with pytest.raises(InputTooLarge):
        await storage.get("outputs/u/j/0.png", 4)
    broken = S3Storage.from_settings(s3_settings(s3_endpoint, "no-such-bucket"))
    with pytest.raises(StorageError):
        await broken.put("outputs/u/j/0.png", b"x", "image/png")


async def test_s3_credentials_never_appear_in_errors(s3_endpoint):
    storage = S3Storage.from_settings(s3_settings(s3_endpoint, "no-such-bucket"))
    with pytest.raises(StorageError) as info:
        await storage.put("outputs/u/j/0.png", b"x", "image/png")
    assert S3_SECRET not in str(info.value) and S3_KEY_ID not in str(info.value)


async def test_runpod_handler_end_to_end_on_s3(s3_endpoint, s3_bucket, receiver, tmp_path):
    client, bucket = s3_bucket
    settings = s3_settings(s3_endpoint, bucket)
    masks_dir = tmp_path / "masks"
    truth = {}
    for idx in (0, 1):
        rgb, masks = room_photo(320, 200, seed=idx)
        key = f"inputs/u_abc/job_123/{idx}.jpg"
        client.put_object(Bucket=bucket, Key=key, Body=jpeg_bytes(rgb), ContentType="image/jpeg")
        write_masks(masks_dir, key, masks)
        truth[idx] = masks
    handler = make_handler(build_pipeline(settings, segmenter=FileMaskSegmenter(masks_dir)))
    job = make_job(2, callback_url=f"{receiver.url}/jobs/job_123/callback")

    result = await handler({"id": "rp-1", "input": job})

    assert result["status"] == "completed"
    assert [i["callback"] for i in result["items"]] == ["delivered", "delivered"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    for idx in (0, 1):
        expected = {f"outputs/u_abc/job_123/{idx}_result.png": "image/png",
                    f"previews/u_abc/job_123/{idx}_thumb.jpg": "image/jpeg",
                    f"masks/u_abc/job_123/{idx}_instances.json": "application/json",
                    **{f"masks/u_abc/job_123/{idx}_{c}.png": "image/png"
                       for c in ("Wall", "Floor", "Frame_Molding", "Window")}}
        assert set(expected) <= keys
        for key, content_type in expected.items():
            obj = client.get_object(Bucket=bucket, Key=key)
            assert obj["ContentType"] == content_type
            data = obj["Body"].read()
            if content_type == "application/json":
                assert json.loads(data)["width"] == 320
            else:
                img = Image.open(io.BytesIO(data))
                img.verify()
                assert img.format == ("PNG" if content_type == "image/png" else "JPEG")
        original = np.asarray(Image.open(io.BytesIO(
            client.get_object(Bucket=bucket, Key=f"inputs/u_abc/job_123/{idx}.jpg")["Body"].read())).convert("RGB"))
        out = np.asarray(Image.open(io.BytesIO(
            client.get_object(Bucket=bucket, Key=f"outputs/u_abc/job_123/{idx}_result.png")["Body"].read())))
        protect = truth[idx]["Window"] | truth[idx]["Frame_Molding"]
        assert np.array_equal(out[protect], original[protect])
    assert sorted(cb.payload["idx"] for cb in receiver.received) == [0, 1]
    assert all(cb.verified for cb in receiver.received)


async def test_handler_answers_unparseable_jobs_with_runpod_error_shape(receiver):
    handler = make_handler(build_pipeline(make_settings(segmenter="files", segmenter_masks_dir="/nonexistent")))
    result = await handler({"id": "rp-2", "input": {"job_id": "j1", "items": []}})
    assert set(result) == {"error"} and "items" in result["error"] and "callback_url" in result["error"]
    assert receiver.received == []

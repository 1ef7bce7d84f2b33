"""Shared fixtures: settings on a temp store, an S3 server on loopback, a callback receiver,
and small photos with masks we know exactly."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from engine.receiver import LoopbackReceiver
from engine.settings import Settings

SECRET = "test-callback-secret-0123456789"
S3_KEY_ID, S3_SECRET = "testing-key-id", "testing-secret-key-DO-NOT-LOG"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def receiver() -> Iterator[LoopbackReceiver]:
    with LoopbackReceiver(SECRET) as rx:
        yield rx


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "gpu_callback_secret": SECRET,
        "callback_allowed_hosts": "127.0.0.1",
        "callback_backoff": "0.01,0.02",
        "segmenter": "files",
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> tuple[object, str]:
    """A fresh bucket on the loopback S3 server, and a boto3 client to inspect it."""
    bucket = f"test-{abs(hash(request.node.nodeid)) % 10**10}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
    client.create_bucket(Bucket=bucket)
    return client, bucket


# -- photos with known masks -------------------------------------------------------------------

def room_photo(width: int = 240, height: int = 160, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A small shaded 'room': wall (top), floor (bottom), a window with a frame, two chairs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.75 + 0.25 * (xx / width)
    img = np.zeros((height, width, 3), np.float32)
    horizon = int(height * 0.6)
    wall = yy < horizon
    img[wall] = np.array([200, 190, 170]) * shade[wall, None]
    img[~wall] = np.array([150, 110, 70]) * shade[~wall, None]
    img += rng.normal(0, 4, img.shape)
    masks = {"Wall": wall.copy(), "Floor": ~wall}
    frame = np.zeros((height, width), bool)
    window = np.zeros((height, width), bool)
    frame[20:70, 30:100] = True
    window[25:65, 35:95] = True
    frame &= ~window
    img[frame] = (245, 245, 245)
    img[window] = (150, 190, 230)
    masks["Wall"] &= ~(frame | window)
    masks["Frame_Molding"], masks["Window"] = frame, window
    furniture = np.zeros((height, width), bool)
    furniture[100:140, 140:170] = True
    furniture[105:145, 190:220] = True
    img[furniture] = (60, 60, 90)
    masks["Floor"] &= ~furniture
    masks["Furniture"] = furniture
    return np.clip(img, 0, 255).astype(np.uint8), masks


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def png_bytes(img: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", **params)
    return out.getvalue()


def write_masks(root: Path, image_id: str, masks: dict[str, np.ndarray]) -> None:
    folder = root / Path(image_id).with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.png")


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def make_job(n_items: int = 1, **overrides: object) -> dict:
    job: dict = {
        "job_id": "job_123", "user_id": "u_abc", "preset": "interior", "stage": "full",
        "concepts": {"Wall": {"action": "recolor", "value": "#2040A0"},
                     "Floor": {"action": "tone", "value": "warm"}},
        "protect": ["Frame_Molding", "Window"],
        "items": [
            {"idx": i, "input_key": f"inputs/u_abc/job_123/{i}.jpg",
             "output_key": f"outputs/u_abc/job_123/{i}_result.png",
             "preview_key": f"previews/u_abc/job_123/{i}_thumb.jpg"}
            for i in range(n_items)
        ],
        "callback_url": "http://127.0.0.1:9/jobs/job_123/callback",
        "idempotency_prefix": "job_123",
        "batch_concurrency": 2,
    }
    job.update(overrides)
    return job


def dumps(obj: object) -> str:
    return json.dumps(obj)

"""``python main.py --event sample.json`` as a new user runs it: no settings, no network, no GPU."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

PACKAGE = Path(__file__).resolve().parent.parent
SAMPLE_INPUT = "inputs/u_demo/job_demo/0.jpg"


def test_sample_event_runs_locally_and_shows_files_and_verified_callbacks(tmp_path):
    store = tmp_path / "store"
    (store / SAMPLE_INPUT).parent.mkdir(parents=True)
    shutil.copy(PACKAGE / "local_store" / SAMPLE_INPUT, store / SAMPLE_INPUT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STORAGE_", "GPU_", "CALLBACK_", "SAM3_", "SEGMENTER", "MODEL_", "HF_"))}
    env.update(STORAGE_LOCAL_DIR=str(store), MODEL_CACHE_DIR=str(tmp_path / "models"), HF_HUB_OFFLINE="1")

    run = subprocess.run([sys.executable, "main.py", "--event", "sample.json"], cwd=PACKAGE, env=env,
                         capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "signature verified" in run.stdout
    assert "Idempotency-Key job_demo:0:0" in run.stdout
    assert '"status": "completed"' in run.stdout
    result = store / "outputs/u_demo/job_demo/0_result.png"
    thumb = store / "previews/u_demo/job_demo/0_thumb.jpg"
    assert str(result) in run.stdout and str(thumb) in run.stdout
    with Image.open(result) as img, Image.open(store / SAMPLE_INPUT) as src:
        assert img.format == "PNG" and img.size == src.size
    with Image.open(io.BytesIO(thumb.read_bytes())) as img:
        assert img.format == "JPEG" and max(img.size) == 300
    for concept in ("Wall", "Floor", "Ceiling", "Furniture", "Window", "Door"):
        assert (store / f"masks/u_demo/job_demo/0_{concept}.png").is_file()
    assert (store / "masks/u_demo/job_demo/0_instances.json").is_file()
    # Log lines go to stderr as text, tagged with the job id; the expected fallback to the sample's
    # masks is a warning, and nothing is logged at error level.
    assert "job_id='job_demo'" in run.stderr and "job_id='job_demo'" not in run.stdout
    levels = {line.split()[1] for line in run.stderr.splitlines() if line[:2].isdigit()}
    assert "warning" in levels and "error" not in levels
    assert "segmenter.unavailable" in run.stderr

"""``main.py`` as a user meets it: --help, exit statuses, plain sentences for configuration
errors, log formats."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from engine.logs import configure_logging, job_id_var
from engine.settings import Settings
from local_run import run_event_file

CLEARED = ("STORAGE_", "GPU_CALLBACK", "CALLBACK_", "SAM3_", "SEGMENTER", "MODEL_CACHE", "HF_", "CF_",
           "RUNPOD_", "WORKER_ADAPTER", "LOG_", "BATCH_")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No worker or Runpod settings in the environment, and a working directory without .env."""
    import os

    for name in list(os.environ):
        if name.startswith(CLEARED):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    configure_logging("info")


def test_help_names_run_modes_sdk_flags_settings_and_exit_statuses(capsys):
    with pytest.raises(SystemExit) as stop:
        main.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for words in ("--event FILE", "Runpod Serverless", "--adapter queue_pull", "--test_input", "--rp_serve_api",
                  "--rp_api_port", "SEGMENTER=files", "SEGMENTER_MASKS_DIR", "STORAGE_S3_ENDPOINT", "LOG_FORMAT",
                  "GPU_CALLBACK_SECRET", "0  every item done", "1  some item failed", "2  the event file",
                  "3  every item ended, but a callback was not delivered"):
        assert words in text, words


def test_bare_start_outside_runpod_says_what_to_run_and_exits_2(clean_env, capsys):
    assert main.main([]) == 2
    err = capsys.readouterr().err
    assert "Not running on Runpod" in err and "python main.py --event sample.json" in err
    assert "test_input.json not found" not in err


def test_runpod_is_started_when_it_has_work(clean_env, tmp_path, monkeypatch):
    assert not main.runpod_has_work([], tmp_path)
    assert main.runpod_has_work(["--test_input", "{}"], tmp_path)
    assert main.runpod_has_work(["--rp_serve_api"], tmp_path)
    (tmp_path / "test_input.json").write_text("{}")
    assert main.runpod_has_work([], tmp_path)
    (tmp_path / "test_input.json").unlink()
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "https://api.runpod.ai/v2/x/job-take/$ID")
    assert main.runpod_has_work([], tmp_path)


def test_unconfigured_queue_pull_says_which_settings_and_exits_2(clean_env, capsys):
    assert main.main(["--adapter", "queue_pull"]) == 2
    err = capsys.readouterr().err
    assert "CF_ACCOUNT_ID, CF_QUEUE_ID, CF_API_TOKEN" in err and err.startswith("The queue pull adapter needs")


def test_unusable_setting_is_named_without_its_value(clean_env, monkeypatch, capsys):
    monkeypatch.setenv("BATCH_CONCURRENCY", "99")
    monkeypatch.setenv("CALLBACK_TIMEOUT_SEC", "hunter2-secret")
    assert main.main(["--event", "sample.json"]) == 2
    err = capsys.readouterr().err
    assert "BATCH_CONCURRENCY" in err and "CALLBACK_TIMEOUT_SEC" in err and "hunter2" not in err


# -- --event exit statuses, through the real pipeline on a small photo -----------------------------


def _job(tmp_path: Path, **changes) -> Path:
    """A one-photo job on the local store under tmp_path, its Wall mask served from files."""
    key = "inputs/u1/j1/0.png"
    photo = tmp_path / "store" / key
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(photo)
    masks = tmp_path / "masks" / "inputs/u1/j1/0"
    masks.mkdir(parents=True, exist_ok=True)
    wall = np.zeros((48, 64), np.uint8)
    wall[:24] = 255
    Image.fromarray(wall).save(masks / "Wall.png")
    job = {"job_id": "j1", "user_id": "u1", "preset": "interior", "idempotency_prefix": "j1",
           "concepts": {"Wall": {"action": "recolor", "value": "sage"}},
           "items": [{"idx": 0, "input_key": key, "output_key": "outputs/u1/j1/0.png",
                      "preview_key": "previews/u1/j1/0.jpg"}],
           "callback_url": "http://127.0.0.1:9/cb"}
    job.update(changes)
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"input": job}))
    return path


def _settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, storage_local_dir=tmp_path / "store", segmenter="files",
                    segmenter_masks_dir=tmp_path / "masks", callback_backoff=[0.1])


async def test_event_exit_0_when_every_item_is_done(clean_env, tmp_path, capsys):
    assert await run_event_file(_job(tmp_path), _settings(tmp_path)) == 0
    assert "signature verified" in capsys.readouterr().out


async def test_event_exit_1_when_an_item_failed(clean_env, tmp_path, capsys):
    path = _job(tmp_path)
    (tmp_path / "store" / "inputs/u1/j1/0.png").unlink()
    assert await run_event_file(path, _settings(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "INPUT_NOT_FOUND" in out and "Items failed: [0]" in out


@pytest.mark.parametrize("breakage", ["missing file", "not json", "no items", "unknown preset"])
async def test_event_exit_2_when_the_file_or_job_is_unusable(clean_env, tmp_path, breakage):
    path = _job(tmp_path, preset="no_such_preset") if breakage == "unknown preset" else _job(tmp_path)
    if breakage == "missing file":
        path = tmp_path / "absent.json"
    elif breakage == "not json":
        path.write_text("{not json")
    elif breakage == "no items":
        path.write_text(json.dumps({"input": {"job_id": "j1"}}))
    assert await run_event_file(path, _settings(tmp_path)) == 2


async def test_event_exit_3_when_a_callback_was_not_delivered(clean_env, tmp_path, capsys):
    path = _job(tmp_path, callback_url="http://127.0.0.2:9/cb")  # allowed, but nothing listens there
    settings = _settings(tmp_path).model_copy(update={"callback_allowed_hosts": ["127.0.0.2:9"]})
    assert await run_event_file(path, settings) == 3
    assert "Callbacks NOT delivered for items [0]" in capsys.readouterr().out
    assert (tmp_path / "store" / "outputs/u1/j1/0.png").is_file()


# -- log formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_formats(fmt):
    stream = io.StringIO()
    configure_logging("info", stream, fmt=fmt)
    token = job_id_var.set("j1")
    try:
        logging.getLogger("worker.test").warning("segmenter.unavailable", extra={"reason": "no weights"})
    finally:
        job_id_var.reset(token)
        configure_logging("info")
    line = stream.getvalue().strip()
    if fmt == "json":
        assert json.loads(line) | {"ts": 0} == {"ts": 0, "level": "warning", "logger": "worker.test",
                                                 "event": "segmenter.unavailable", "job_id": "j1",
                                                 "reason": "no weights"}
    else:
        assert line.endswith("warning segmenter.unavailable job_id='j1' reason='no weights'")

"""The worker under the runpod SDK's production loop, as the image runs it: ``python main.py``
with the SDK's ``RUNPOD_WEBHOOK_*`` variables pointing at a job API on loopback
(tests/fake_runpod_api.py), local storage in a temp folder, the file segmenter taking a
simulated device's time per photo, and a loopback callback receiver.

Each worker process takes a while to start on a busy host, so one worker serves several
scenarios in turn; the SIGTERM test has its own. Waits are generous, assertions are about order
and counts, never about durations.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.receiver import LoopbackReceiver
from tests.conftest import SECRET, jpeg_bytes, make_job, room_photo, write_masks
from tests.fake_runpod_api import FakeJobApi

MAIN = Path(__file__).resolve().parent.parent / "main.py"
STARTUP_S = 180  # a cold worker on a loaded 2-core host
JOB_S = 120


class Worker:
    """``python main.py`` against a fake job API, with photos and masks in ``root``."""

    def __init__(self, root: Path, api: FakeJobApi, receiver: LoopbackReceiver, command: list[str] | None = None,
                 **env: str) -> None:
        self.root, self.api, self.receiver = root, api, receiver
        self.store, self.masks = root / "store", root / "masks"
        self.log = open(root / "worker.log", "w")  # noqa: SIM115 - closed in stop()
        settings = {
            "SEGMENTER": "files", "SEGMENTER_MASKS_DIR": str(self.masks), "SEGMENTER_FILES_DELAY_MS": "300",
            "STORAGE_LOCAL_DIR": str(self.store), "GPU_CALLBACK_SECRET": SECRET,
            "CALLBACK_ALLOWED_HOSTS": "127.0.0.1", "CALLBACK_BACKOFF": "0.05,0.1", "JOB_CONCURRENCY": "3",
            "LOG_LEVEL": "info", "STOP_GRACE_SEC": "5",
        }
        self.proc = subprocess.Popen(command or [sys.executable, str(MAIN)], cwd=root, stdout=self.log,
                                     stderr=subprocess.STDOUT, env={**os.environ, **api.env(), **settings, **env})

    def job(self, name: str, items: int, receiver: LoopbackReceiver | None = None, **overrides: object) -> dict:
        """A job whose photos and masks are in place, its callbacks to ``receiver`` (default: the worker's)."""
        for idx in range(items):
            key = f"inputs/u_abc/{name}/{idx}.jpg"
            rgb, masks = room_photo(240, 160, seed=idx)
            path = self.store / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(rgb))
            write_masks(self.masks, key, masks)
        spec = make_job(items, **{"job_id": name, "idempotency_prefix": name, "batch_concurrency": 1,
                                  "callback_url": f"{(receiver or self.receiver).url}/jobs/{name}/callback",
                                  **overrides})
        for item in spec["items"]:
            item.update(input_key=f"inputs/u_abc/{name}/{item['idx']}.jpg",
                        output_key=f"outputs/u_abc/{name}/{item['idx']}_result.png",
                        preview_key=f"previews/u_abc/{name}/{item['idx']}_thumb.jpg")
        return spec

    def callbacks(self, name: str, receiver: LoopbackReceiver | None = None) -> list[dict]:
        return [cb.payload for cb in (receiver or self.receiver).received if cb.payload.get("job_id") == name]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.log.close()

    def output(self) -> str:
        return (self.root / "worker.log").read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    root = tmp_path_factory.mktemp("runpod_loop")
    with FakeJobApi() as api, LoopbackReceiver(SECRET) as receiver:
        worker = Worker(root, api, receiver)
        try:
            yield worker
        finally:
            worker.stop()


def exactly_one_terminal_callback_each(worker: Worker, name: str, items: int,
                                       receiver: LoopbackReceiver | None = None) -> list[dict]:
    got = worker.callbacks(name, receiver)
    assert Counter(p["idx"] for p in got) == Counter(range(items)), got
    assert all(p["status"] in ("done", "failed") for p in got)
    return got


def test_several_jobs_are_served_at_once_with_progress(served: Worker) -> None:
    api = served.api
    ids = [api.add_job(served.job(f"job_overlap_{n}", 2)) for n in range(3)]
    api.wait(lambda: all(i in api.results for i in ids), STARTUP_S + JOB_S)

    jobs = [api.jobs[i] for i in ids]
    # All three were taken before any of them ended: they ran at once in one worker.
    assert max(j.taken_at for j in jobs) < min(j.done_at for j in jobs), served.output()[-3000:]
    for n, job in enumerate(jobs):
        output = job.result["output"]
        assert output["status"] == "completed"
        assert [i["callback"] for i in output["items"]] == ["delivered", "delivered"]
        assert (served.store / f"outputs/u_abc/job_overlap_{n}/1_result.png").is_file()
        exactly_one_terminal_callback_each(served, f"job_overlap_{n}", 2)
    # Progress after each item but the last (its result says the rest), posted from a thread.
    api.wait(lambda: all(len(j.progress) == 1 for j in jobs), 30)
    for job in jobs:
        assert job.progress == [{"items_finished": 1, "items_total": 2}]
    assert any(p.get("job_id") for p in api.pings)  # the ping reports the jobs in hand


@pytest.mark.parametrize("bad_input", ["not json at all", None, {"items": 5}, {"items": True},
                                       {"job_id": "j", "items": [1], "callback_url": 3}, "[" * 100_000])
def test_a_bad_job_gets_an_error_and_the_worker_keeps_serving(served: Worker, bad_input: object) -> None:
    api = served.api
    bad = api.add_job(bad_input)
    good = api.add_job(served.job("job_after_bad", 1, idempotency_prefix=f"after_{bad}"))
    api.wait(lambda: bad in api.results and good in api.results, STARTUP_S + JOB_S)

    answer = api.results[bad]
    assert set(answer) == {"error"} and isinstance(answer["error"], str), answer
    assert "Traceback" not in answer["error"] and "/" not in answer["error"]
    assert api.results[good]["output"]["status"] == "completed"
    assert served.proc.poll() is None


def test_a_slow_receiver_does_not_hold_jobs_back(served: Worker) -> None:
    """A job whose items are all reported and only waits for its callbacks holds no slot: with
    3 slots and a receiver that takes 6 s to answer, all 5 jobs are taken before any ends."""
    api = served.api
    with LoopbackReceiver(SECRET, answer_after_s=6.0) as slow:
        ids = [api.add_job(served.job(f"job_slow_receiver_{n}", 1, slow)) for n in range(5)]
        api.wait(lambda: all(i in api.results for i in ids), STARTUP_S + JOB_S)
        jobs = [api.jobs[i] for i in ids]
        assert max(j.taken_at for j in jobs) < min(j.done_at for j in jobs)
        for n, job in enumerate(jobs):
            assert [i["callback"] for i in job.result["output"]["items"]] == ["delivered"]
            exactly_one_terminal_callback_each(served, f"job_slow_receiver_{n}", 1, slow)


def test_a_stop_signal_mid_job_ends_every_item_once_and_the_worker_keeps_serving(served: Worker) -> None:
    api = served.api
    stopped = api.add_job(served.job("job_stopped", 6))
    api.wait(lambda: len(served.callbacks("job_stopped")) >= 1, STARTUP_S + JOB_S)
    api.stop(stopped)
    api.wait(lambda: len(served.callbacks("job_stopped")) >= 6, JOB_S)
    after = api.add_job(served.job("job_after_stop", 1))
    api.wait(lambda: after in api.results, JOB_S)

    got = exactly_one_terminal_callback_each(served, "job_stopped", 6)  # and none came late
    assert any(p["error_code"] == "TIMEOUT" for p in got)
    assert all(p["status"] == "done" or p["error_code"] == "TIMEOUT" for p in got)
    assert stopped not in api.results  # Runpod has ended the job; the SDK posts nothing for it
    assert api.results[after]["output"]["status"] == "completed"


def test_sigterm_mid_job_reports_every_item_and_exits_zero(tmp_path: Path) -> None:
    with FakeJobApi() as api, LoopbackReceiver(SECRET) as receiver:
        worker = Worker(tmp_path, api, receiver, SEGMENTER_FILES_DELAY_MS="1500")
        try:
            rp_id = api.add_job(worker.job("job_sigterm", 6))
            api.wait(lambda: len(worker.callbacks("job_sigterm")) >= 1, STARTUP_S + JOB_S)
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(JOB_S) == 0, worker.output()[-3000:]

            got = exactly_one_terminal_callback_each(worker, "job_sigterm", 6)
            assert any(p["status"] == "failed" for p in got)  # cut short, not run to the end
            assert all(p["status"] == "done" or p["error_code"] == "TIMEOUT" for p in got)
            result = api.results[rp_id]["output"]  # the job's result was posted before the exit
            assert sorted(i["idx"] for i in result["items"]) == list(range(6))
            assert {i["idx"]: i["status"] for i in result["items"]} == {p["idx"]: p["status"] for p in got}
            assert len(api.jobs) == 1 and not api.queue
        finally:
            worker.stop()


def test_a_broken_gpu_fails_its_job_asks_for_a_fresh_worker_and_takes_no_more(tmp_path: Path) -> None:
    """The real Sam3Segmenter (tiny checkpoint) on a GPU that fails with a sticky CUDA error."""
    from tests.sam3_tiny import save_tiny_sam3

    checkpoint = save_tiny_sam3(tmp_path / "tiny")
    with FakeJobApi() as api, LoopbackReceiver(SECRET) as receiver:
        worker = Worker(tmp_path, api, receiver, [sys.executable, "-m", "tests.broken_gpu"],
                        SEGMENTER="sam3", SAM3_MODEL=str(checkpoint), SAM3_DEVICE="cpu", PYTHONPATH=str(MAIN.parent))
        try:
            first = api.add_job(worker.job("job_gpu", 2))
            api.wait(lambda: first in api.results, STARTUP_S + JOB_S)
            answer = api.results[first]
            assert answer["stopPod"] is True  # the handler's refresh_worker, as the SDK posts it
            assert [i["error_code"] for i in answer["output"]["items"]] == ["SEGMENTATION_ERROR"] * 2
            exactly_one_terminal_callback_each(worker, "job_gpu", 2)

            time.sleep(2 * api.poll_s)  # a take already waiting when the GPU broke has ended
            second = api.add_job(worker.job("job_after_gpu", 1))
            assert worker.proc.wait(JOB_S) == 0, worker.output()[-3000:]
            assert api.jobs[second].taken_at is None
        finally:
            worker.stop()

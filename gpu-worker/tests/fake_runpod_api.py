"""A small Runpod job API on 127.0.0.1 (ephemeral port), answering the runpod SDK's production
loop as Runpod does: ``job-take`` and ``job-take-batch`` (long-polls handing out queued jobs),
``job-done`` (results and ``IN_PROGRESS`` progress), ``job-stop`` (the stop channel: job ids to
cancel) and ``ping``. ``env()`` gives the ``RUNPOD_*`` variables that point a worker at it.

    with FakeJobApi() as api:
        api.add_job({"job_id": ...})                 # returns the Runpod job id
        worker = subprocess.Popen([..., "main.py"], env={**os.environ, **api.env()})
        api.wait(lambda: "rp-1" in api.results)
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WORKER_ID = "worker-test-1"
API_KEY = "fake-runpod-api-key"


@dataclass
class JobRecord:
    id: str
    input: Any
    taken_at: float | None = None
    done_at: float | None = None
    result: dict[str, Any] | None = None
    progress: list[Any] = field(default_factory=list)


class FakeJobApi:
    def __init__(self, poll_s: float = 0.5) -> None:
        self.poll_s = poll_s  # how long a take or stop poll is held open when there is nothing
        self.jobs: dict[str, JobRecord] = {}
        self.queue: list[str] = []
        self.stops: list[str] = []
        self.pings: list[dict[str, list[str]]] = []
        self.takes: list[dict[str, list[str]]] = []  # query of every take request
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- the test's side ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        base = f"{self.url}/v2/test-endpoint"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=TEST",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=TEST",
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_POD_ID": WORKER_ID,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",  # its network check dials 8.8.8.8
            "RUNPOD_LOG_LEVEL": "INFO",
        }

    def add_job(self, job_input: Any) -> str:
        with self._cond:
            job_id = f"rp-{next(self._ids)}"
            self.jobs[job_id] = JobRecord(job_id, job_input)
            self.queue.append(job_id)
            self._cond.notify_all()
            return job_id

    def stop(self, job_id: str) -> None:
        with self._cond:
            self.stops.append(job_id)
            self._cond.notify_all()

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return {j.id: j.result for j in self.jobs.values() if j.result is not None}

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the fake job API did not see what the test waited for")
                self._cond.wait(min(left, 0.2))

    def __enter__(self) -> FakeJobApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the worker's side ----------------------------------------------------------------------

    def _take(self, query: dict[str, list[str]], batch: bool) -> list[JobRecord] | None:
        wanted = int(query.get("batch_size", ["1"])[0]) if batch else 1
        deadline = time.monotonic() + self.poll_s
        with self._cond:
            self.takes.append(query)
            while not self.queue and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            taken = [self.jobs[i] for i in self.queue[:wanted]]
            del self.queue[:wanted]
            for job in taken:
                job.taken_at = time.monotonic()
            self._cond.notify_all()
            return taken or None

    def _stop_signals(self) -> list[str]:
        deadline = time.monotonic() + self.poll_s
        with self._cond:
            while not self.stops and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            stops, self.stops = self.stops, []
            return stops

    def _done(self, job_id: str, body: dict[str, Any]) -> None:
        with self._cond:
            job = self.jobs[job_id]
            if body.get("status") == "IN_PROGRESS":
                job.progress.append(body.get("output"))
            else:
                job.result, job.done_at = body, time.monotonic()
            self._cond.notify_all()

    def _ping(self, query: dict[str, list[str]]) -> None:
        with self._cond:
            self.pings.append(query)
            self._cond.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    if body is not None:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker gave up on a long-poll (it is shutting down)

            def _route(self) -> tuple[str, list[str], dict[str, list[str]]]:
                parts = urlsplit(self.path)
                segments = parts.path.strip("/").split("/")  # v2, endpoint, action, ...
                if self.headers.get("Authorization") != API_KEY:
                    return "unauthorised", [], {}
                return segments[2], segments[3:], parse_qs(parts.query)

            def do_GET(self) -> None:
                action, rest, query = self._route()
                if action in ("job-take", "job-take-batch"):
                    taken = api._take(query, batch=action == "job-take-batch")
                    if not taken:
                        return self._answer(204)
                    jobs = [{"id": j.id, "input": j.input} for j in taken]
                    return self._answer(200, jobs if action == "job-take-batch" else jobs[0])
                if action == "job-stop":
                    stops = api._stop_signals()
                    return self._answer(200, {"jobsToStop": stops}) if stops else self._answer(204)
                if action == "ping":
                    api._ping(query)
                    return self._answer(200, {})
                self._answer(401 if action == "unauthorised" else 404)

            def do_POST(self) -> None:
                action, rest, _ = self._route()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if action == "job-done" and len(rest) == 2 and rest[1] in api.jobs:
                    api._done(rest[1], json.loads(body))
                    return self._answer(200, {})
                self._answer(401 if action == "unauthorised" else 404)

        return Handler

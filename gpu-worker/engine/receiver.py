"""A callback receiver on loopback that checks signatures with ``verify_callback``.

Used by ``main.py --event`` to show which callbacks arrived and verified, and by the tests.
It is also the smallest complete example of a receiver (contract section 4):

1. read the body bytes (bounded) and verify the ``Authorization`` header: 401 when it fails;
2. read ``idempotency_key`` from the signed body; the ``Idempotency-Key`` header is not signed,
   so a header that differs from it is refused with 400 (dedupe on the body's key, never the
   header's alone);
3. a key already applied is a duplicate: answer 200, change nothing;
4. ``done`` is final: a ``failed`` for an item already held as ``done`` is answered 200 and
   ignored; a ``done`` after a ``failed`` (a redelivery that succeeded) replaces it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.callback import verify_callback

MAX_BODY_BYTES = 1 << 20


@dataclass
class ReceivedCallback:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    duplicate: bool
    status: int = 200  # what the receiver answered
    applied: bool = False  # changed the item's recorded outcome

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


def _signed_key(body: bytes) -> tuple[str, tuple[str, int], str] | None:
    """(idempotency_key, (job_id, idx), status) from a verified body; None when it lacks them."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    key, job_id, idx, status = (payload.get(k) for k in ("idempotency_key", "job_id", "idx", "status"))
    if not (isinstance(key, str) and isinstance(job_id, str) and isinstance(idx, int) and status in ("done", "failed")):
        return None
    return key, (job_id, idx), status


@dataclass
class LoopbackReceiver:
    secret: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    # Answers to give in turn (per Idempotency-Key, or "*" for any key) before the receiver's own.
    statuses: dict[str, list[int]] = field(default_factory=dict)
    received: list[ReceivedCallback] = field(default_factory=list)
    outcomes: dict[tuple[str, int], str] = field(default_factory=dict)  # (job_id, idx) -> done / failed
    seen: set[str] = field(default_factory=set)  # idempotency keys applied
    answer_after_s: float = 0.0  # a slow receiver: each answer waits this long (recorded first)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> ReceivedCallback:
        """One callback: decides the answer and records it (thread-safe)."""
        verified = verify_callback(body, headers.get("Authorization"), self.secret)
        header_key = headers.get("Idempotency-Key", "")
        signed = _signed_key(body) if verified else None
        with self._lock:
            duplicate = signed is not None and signed[0] in self.seen
            queued = self.statuses.get(header_key) or self.statuses.get("*")
            if queued:
                status = queued.pop(0)
            elif not verified:
                status = 401
            elif signed is None or signed[0] != header_key:
                status = 400
            else:
                status = 200
            applied = False
            if signed is not None and 200 <= status < 300 and not duplicate:
                key, item, outcome = signed
                self.seen.add(key)
                if self.outcomes.get(item) != "done":
                    self.outcomes[item] = outcome
                    applied = True
            record = ReceivedCallback(path, headers, body, verified, duplicate, status, applied)
            self.received.append(record)
        return record

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY_BYTES:
                    self._answer(400 if length < 0 else 413)
                    return
                body = self.rfile.read(length)
                record = receiver.handle(self.path, dict(self.headers.items()), body)
                time.sleep(receiver.answer_after_s)
                self._answer(record.status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A callback receiver on loopback that checks signatures with ``verify_callback``.

Used by ``main.py --event`` to show which callbacks arrived and verified, and by the tests.
It is also the smallest complete example of a receiver: read the body bytes, verify the
``Authorization`` header, drop ``Idempotency-Key`` values already seen.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.callback import verify_callback


@dataclass
class ReceivedCallback:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    duplicate: bool

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class LoopbackReceiver:
    secret: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    # Answers to give in turn (per Idempotency-Key, or "*" for any key); then 200, or 401 if unverified.
    statuses: dict[str, list[int]] = field(default_factory=dict)
    received: list[ReceivedCallback] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                verified = verify_callback(body, self.headers.get("Authorization"), receiver.secret)
                key = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    duplicate = any(r.verified and r.headers.get("Idempotency-Key") == key for r in receiver.received)
                    receiver.received.append(
                        ReceivedCallback(self.path, dict(self.headers.items()), body, verified, duplicate)
                    )
                    queued = receiver.statuses.get(key) or receiver.statuses.get("*")
                    status = queued.pop(0) if queued else (200 if verified else 401)
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

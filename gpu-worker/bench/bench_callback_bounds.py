"""Callback attempts against hostile receivers: the sender at a reference commit next to the
current one, same run.

    cd gpu-worker && python -m bench.bench_callback_bounds [--ref COMMIT]   # writes bench/results/callback_bounds_<host>.md

Two receivers on loopback, each run in a fresh process per sender (so peak memory is that
sender's alone):

- **trickle**: answers one byte of its status line every 0.5 s, for 20 s, so each read is well
  within the read timeout; the sender runs with a 1 s timeout, a 2 s deadline and one retry.
- **huge**: answers 200 with a 400 MB body (streamed from one reused buffer); the number is
  the growth of the process's peak RSS during the send.

``--ref`` names the commit whose ``engine/callback.py`` is the "before" (it must import with
the current environment).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "ae79770"
TRICKLE_EVERY, TRICKLE_FOR = 0.5, 20.0
HUGE_MB = 400


def serve(kind: str) -> int:
    sock = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                if kind == "trickle":
                    status = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100
                    for i in range(int(TRICKLE_FOR / TRICKLE_EVERY)):
                        time.sleep(TRICKLE_EVERY)
                        conn.sendall(status[i:i + 1])
                else:
                    size = HUGE_MB * 1024 * 1024
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
                    chunk = b"x" * (1024 * 1024)
                    for _ in range(HUGE_MB):
                        conn.sendall(chunk)
                # Close only after the client has: unread request bytes would make the close a
                # reset, which can discard the end of the answer still in flight.
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(30)
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    def accept() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return sock.getsockname()[1]


def load_sender(source: Path | None):
    if source is None:
        from engine import callback
        return callback.HttpCallbackSender
    spec = importlib.util.spec_from_file_location("reference_callback", source)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.HttpCallbackSender


def one(kind: str, source: Path | None) -> dict[str, float | str]:
    """Runs in the child process: one send to a receiver of ``kind``."""
    port = serve(kind)
    sender_cls = load_sender(source)
    sender = sender_cls("bench-secret", timeout=1.0, deadline=2.0, backoff=[0.5],
                        allowed_hosts=[f"127.0.0.1:{port}"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    delivery = asyncio.run(sender.send(f"http://127.0.0.1:{port}/cb", {"job_id": "bench", "idx": 0}, "bench:0:0"))
    seconds = time.monotonic() - started
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"seconds": round(seconds, 2), "peak_rss_growth_mb": round(rss_growth_mb, 1),
            "attempts": delivery.attempts, "outcome": "delivered" if delivery.delivered else delivery.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=REFERENCE)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, source = args.child
        print(json.dumps(one(kind, Path(source) if source != "-" else None)))
        return

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    old = subprocess.run(["git", "show", f"{args.ref}:gpu-worker/engine/callback.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference_callback.py"
        reference.write_text(old)
        for kind in ("trickle", "huge"):
            for label, source in ((f"reference {args.ref}", str(reference)), (f"current {commit}", "-")):
                run = subprocess.run([sys.executable, "-m", "bench.bench_callback_bounds", "--child", kind, source],
                                     cwd=ROOT, capture_output=True, text=True, timeout=600,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
                if run.returncode != 0:
                    raise SystemExit(f"{kind} / {label} failed:\n{run.stderr[-2000:]}")
                result = json.loads(run.stdout.strip().splitlines()[-1])
                rows.append((kind, label, result))
                print(kind, label, result, flush=True)

    device = f"{platform.machine()}, {os.cpu_count()} cores"
    lines = [
        "# Callback attempts against hostile receivers",
        "",
        f"Device: {device} (shared); {time.strftime('%Y-%m-%d', time.gmtime())}; commit {commit}; "
        f"reference {args.ref}. `python -m bench.bench_callback_bounds`.",
        "",
        f"Sender settings: timeout 1 s, deadline 2 s, backoff [0.5]. trickle: one status-line byte every "
        f"{TRICKLE_EVERY} s for {TRICKLE_FOR:.0f} s. huge: a {HUGE_MB} MB answer.",
        "",
        "| receiver | sender | wall s | peak RSS growth MB | attempts | outcome |",
        "|---|---|---:|---:|---:|---|",
    ]
    for kind, label, r in rows:
        lines.append(f"| {kind} | {label} | {r['seconds']} | {r['peak_rss_growth_mb']} | {r['attempts']} | {r['outcome']} |")
    out = ROOT / "bench" / "results" / f"callback_bounds_{platform.machine()}_{os.cpu_count()}cores.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

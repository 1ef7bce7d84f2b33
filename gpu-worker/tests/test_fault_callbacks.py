"""Fault-matrix cases for callbacks: the signature check, the shipped receiver, the address
policy, bounded attempts and the idempotency key per outcome (README, "Faults")."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from engine.callback import MAX_RESPONSE_BYTES, HttpCallbackSender, RecordingCallbackSender, authorization_header
from engine.callback import verify_callback
from engine.callback_policy import CallbackRefused, check_callback_url
from engine.pipeline import Pipeline
from engine.receiver import LoopbackReceiver
from engine.segmenter import FileMaskSegmenter
from engine.storage import LocalStorage
from tests.conftest import SECRET, jpeg_bytes, make_job, make_settings, room_photo, write_masks

NOW = 1_700_000_000
BODY = json.dumps({"job_id": "job_123", "idx": 0, "status": "done", "idempotency_key": "job_123:0:0"}).encode()

HOSTILE_HEADERS = [
    "Bearer \u00b9\u00b2\u00b3.abc",  # superscript digits: str.isdigit() says yes, int() says no
    "Bearer " + "9" * 5000 + "." + "a" * 64,  # past Python's integer digit limit
    f"Bearer {NOW}." + "\u00e9" * 64,  # non-ASCII signature: compare_digest refuses str with it
    f"Bearer {NOW}.\udc80" + "a" * 63,  # a lone surrogate
    "Bearer \u0661\u0662\u0663.abc",  # Arabic-Indic digits
    f"Bearer {NOW}." + "a" * 10_000,
    "Bearer .", "Bearer", "", "Bearer -1." + "0" * 64, "Bearer 1e9." + "0" * 64,
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS)
def test_verify_callback_never_raises(header):
    assert verify_callback(BODY, header, SECRET, now=NOW) is False


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=50), st.none(), st.integers()),
       header=st.one_of(st.none(), st.integers(), st.binary(max_size=80), st.text(max_size=120),
                        st.builds(lambda t, s: f"Bearer {t}.{s}", st.text(max_size=20), st.text(max_size=80))),
       secret=st.one_of(st.text(max_size=20), st.none(), st.binary(max_size=8)),
       now=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30)))
def test_verify_callback_is_false_for_any_input(body, header, secret, now):
    assert verify_callback(body, header, secret, now=now) in (True, False)
    if not (isinstance(body, bytes) and isinstance(header, str) and isinstance(secret, str)):
        assert verify_callback(body, header, secret, now=now) is False


def post_raw(url: str, body: bytes, headers: dict[str, bytes]) -> int:
    """One POST with header bytes sent as they are (latin-1 on the wire)."""
    with httpx.Client() as client:
        return client.post(url, content=body, headers=headers).status_code


@pytest.mark.parametrize("header", [b"Bearer \xb9\xb2\xb3.abc", b"Bearer " + b"9" * 5000 + b"." + b"a" * 64],
                         ids=["superscript_timestamp", "5000_digit_timestamp"])
def test_receiver_answers_401_to_a_hostile_signature(header):
    with LoopbackReceiver(SECRET) as receiver:
        status = post_raw(f"{receiver.url}/cb", BODY, {"Authorization": header, "Idempotency-Key": b"job_123:0:0"})
    assert status == 401 and receiver.outcomes == {}


def signed(payload: dict) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    return body, authorization_header(SECRET, body)


def test_receiver_refuses_a_replayed_body_under_another_idempotency_key():
    """The header is not signed: a captured callback re-sent under a new header must not count as new."""
    payload = {"job_id": "job_123", "idx": 0, "status": "done", "idempotency_key": "job_123:0:0"}
    body, auth = signed(payload)
    with LoopbackReceiver(SECRET) as receiver:
        first = post_raw(f"{receiver.url}/cb", body, {"Authorization": auth.encode(), "Idempotency-Key": b"job_123:0:0"})
        replay = post_raw(f"{receiver.url}/cb", body, {"Authorization": auth.encode(), "Idempotency-Key": b"other"})
        again = post_raw(f"{receiver.url}/cb", body, {"Authorization": auth.encode(), "Idempotency-Key": b"job_123:0:0"})
    assert (first, replay, again) == (200, 400, 200)
    assert [r.applied for r in receiver.received] == [True, False, False]
    assert receiver.received[2].duplicate


def test_receiver_holds_done_as_final():
    receiver = LoopbackReceiver(SECRET)
    failed = {"job_id": "j", "idx": 3, "status": "failed", "idempotency_key": "j:3:0:failed"}
    done = {"job_id": "j", "idx": 3, "status": "done", "idempotency_key": "j:3:0"}
    outcomes = []
    for payload in (failed, done, failed):
        body, auth = signed(payload)
        record = receiver.handle("/cb", {"Authorization": auth, "Idempotency-Key": payload["idempotency_key"]}, body)
        outcomes.append((record.status, record.applied, receiver.outcomes[("j", 3)]))
    assert outcomes == [(200, True, "failed"), (200, True, "done"), (200, False, "done")]


async def test_done_after_a_failure_is_delivered_under_its_own_key(tmp_path):
    """Item 0 fails (its input is not there yet), the job is sent again and the item is done: the
    receiver must apply the done, not drop it as a duplicate of the failure."""
    cfg = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))
    storage = LocalStorage(cfg.storage_local_dir)
    rgb, masks = room_photo(seed=0)
    write_masks(tmp_path / "masks", "inputs/u_abc/job_123/0.jpg", masks)
    with LoopbackReceiver(SECRET) as receiver:
        sender = HttpCallbackSender(SECRET, backoff=[0.01], allowed_hosts=["127.0.0.1"])
        pipeline = Pipeline(cfg, storage, FileMaskSegmenter(tmp_path / "masks"), sender)
        job = make_job(1, callback_url=f"{receiver.url}/jobs/job_123/callback")
        first = (await pipeline.run_job(job)).to_dict()
        storage._put("inputs/u_abc/job_123/0.jpg", jpeg_bytes(rgb), "image/jpeg", {})
        second = (await pipeline.run_job(job)).to_dict()
    assert [first["items"][0]["status"], second["items"][0]["status"]] == ["failed", "done"]
    keys = [(r.headers["Idempotency-Key"], r.payload["idempotency_key"], r.applied) for r in receiver.received]
    assert keys == [("job_123:0:0:failed", "job_123:0:0:failed", True), ("job_123:0:0", "job_123:0:0", True)]
    assert receiver.outcomes == {("job_123", 0): "done"}


async def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError("an address literal is checked as it is, never resolved")


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::ffff:7f00:1]",
                                  "[64:ff9b::a9fe:a9fe]", "[2002:a00:1::]", "[64:ff9b:1::c0a8:101]"],
                         ids=["ipv4_compatible", "nat64", "6to4", "ipv4_mapped", "nat64_metadata", "6to4_private",
                              "nat64_local_use"])
async def test_callback_url_embedding_loopback_in_ipv6(host):
    with pytest.raises(CallbackRefused, match="public"):
        await check_callback_url(f"https://{host}/cb", [], no_resolver)
    requests: list[httpx.Request] = []
    sender = HttpCallbackSender(SECRET, transport=httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200)))
    delivery = await sender.send(f"https://{host}/cb", {"a": 1}, "k")
    assert not delivery.delivered and requests == []


async def test_callback_host_resolving_to_an_ipv6_form_of_loopback():
    async def nat64(host: str, port: int) -> list[str]:
        return ["64:ff9b::7f00:1"]

    requests: list[httpx.Request] = []
    sender = HttpCallbackSender(SECRET, resolver=nat64,
                                transport=httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200)))
    delivery = await sender.send("https://hooks.example.com/cb", {"a": 1}, "k")
    assert not delivery.delivered and "not a public address" in delivery.reason and requests == []


class TricklingServer:
    """Answers every request one byte of a status line at a time, every ``every`` seconds."""

    def __init__(self, every: float = 0.1, total: int = 200) -> None:
        self.every, self.total = every, total
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * self.total)[: self.total]:
                if self.stop.wait(self.every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


async def test_trickling_receiver_cannot_stretch_an_attempt():
    """Each byte arrives well within the read timeout; the attempt as a whole still ends at
    ``timeout`` (0.5 s). Two attempts (one retry) end in about 1 s, not 2 x 20 s."""
    server = TricklingServer(every=0.1, total=200)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    try:
        sender = HttpCallbackSender(SECRET, timeout=0.5, backoff=[0.01], deadline=60, sleep=sleep,
                                    allowed_hosts=[f"127.0.0.1:{server.port}"])
        started = time.monotonic()
        delivery = await sender.send(f"http://127.0.0.1:{server.port}/cb", {"a": 1}, "k")
        elapsed = time.monotonic() - started
        await sender.aclose()
    finally:
        server.close()
    assert not delivery.delivered and delivery.attempts == 2 and "timed out" in delivery.reason
    assert elapsed < 5, f"two attempts of 0.5 s took {elapsed:.1f} s"


class EndlessBody(httpx.AsyncByteStream):
    """A response body of ``size`` bytes made on demand, counting what was read of it."""

    def __init__(self, size: int, chunk: int = 64 * 1024) -> None:
        self.size, self.chunk, self.served = size, chunk, 0

    async def __aiter__(self):
        while self.served < self.size:
            self.served += self.chunk
            yield b"x" * self.chunk


@pytest.mark.parametrize("status", [200, 500])
async def test_huge_callback_answer_is_not_read(status):
    """A 200 MB answer: the sender reads one chunk of it (the first 4 KiB are enough) and moves on."""
    bodies: list[EndlessBody] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(EndlessBody(200 * 1024 * 1024))
        return httpx.Response(status, stream=bodies[-1])

    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def no_sleep(seconds: float) -> None:
        pass

    sender = HttpCallbackSender(SECRET, backoff=[0.01], resolver=public, sleep=no_sleep,
                                transport=httpx.MockTransport(answer))
    delivery = await sender.send("https://hooks.example.com/cb", {"a": 1}, "k")
    assert delivery.delivered == (status == 200)
    assert bodies and all(body.served <= max(MAX_RESPONSE_BYTES, body.chunk) for body in bodies)


class NoReads(LocalStorage):
    """Storage that fails the test on any read: for jobs refused before their items are read."""

    def _get(self, key: str, max_bytes: int) -> bytes:
        raise AssertionError(f"read {key}")

    def _head(self, key: str):
        raise AssertionError(f"looked up {key}")


@pytest.mark.parametrize("url", ["https://hooks.example.com:99999/cb", "https://[::1/cb", "http://[zz]/cb",
                                 "https://hooks.example.com:0/cb", "https://hooks.example.com/a b",
                                 "https://user:pw@hooks.example.com/cb", "hooks.example.com/cb", "ftp://h.example/cb"],
                         ids=["port_out_of_range", "open_bracket", "bad_ipv6", "port_zero", "space", "credentials",
                              "no_scheme", "ftp"])
async def test_malformed_callback_url_refused_at_parse_time(tmp_path, url):
    """Refused when the job is parsed ({"error": ...}, nothing read), not after the GPU work."""
    cfg = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))

    sender = RecordingCallbackSender()
    pipeline = Pipeline(cfg, NoReads(cfg.storage_local_dir), FileMaskSegmenter(tmp_path / "masks"), sender)
    result = (await pipeline.run_job(make_job(1, callback_url=url))).to_dict()
    assert "callback_url" in result["error"] and sender.sent == []


@pytest.mark.parametrize("url, allowed", [("https://10.0.0.7/cb", []), ("https://[::ffff:7f00:1]/cb", []),
                                          ("http://hooks.example.com/cb", []),
                                          ("https://hooks.example.com/cb", ["receiver.example.net"])],
                         ids=["private", "mapped_loopback", "http_without_allowlist", "not_in_allowlist"])
async def test_refused_callback_url_fails_the_job_before_any_read_or_segmentation(tmp_path, url, allowed):
    """A URL the callback policy refuses could receive no result: every item ends failed with
    INVALID_MESSAGE at once, undelivered, with nothing read, segmented or sent (the pull adapter
    acks such a message without running it)."""
    cfg = make_settings(storage_local_dir=str(tmp_path / "store"), segmenter_masks_dir=str(tmp_path / "masks"))

    requests: list[httpx.Request] = []
    sender = HttpCallbackSender(SECRET, allowed_hosts=allowed, resolver=no_resolver,
                                transport=httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200)))
    segmenter = FileMaskSegmenter(tmp_path / "masks")
    pipeline = Pipeline(cfg, NoReads(cfg.storage_local_dir), segmenter, sender)
    result = (await pipeline.run_job(make_job(2, callback_url=url))).to_dict()
    assert result["status"] == "failed"
    assert [(i["idx"], i["status"], i["error_code"], i["callback"]) for i in result["items"]] == \
        [(0, "failed", "INVALID_MESSAGE", "undelivered"), (1, "failed", "INVALID_MESSAGE", "undelivered")]
    assert all(i["error"].startswith("callback_url refused: ") for i in result["items"])
    assert segmenter.calls == 0 and requests == []

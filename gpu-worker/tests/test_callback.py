"""Callbacks on the wire: body, headers, signature, retries, host policy.

The sender takes its network as an injected ``httpx.MockTransport``; without an allowlist the
sender still puts its ``PublicOnlyTransport`` on top, so the address policy is exercised too
(the mock then sees the checked address in the URL and the URL's host in ``Host``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random

import httpx
import pytest

from engine.callback import HttpCallbackSender, authorization_header, sign, verify_callback
from engine.callback_policy import CallbackRefused, PublicOnlyTransport, check_callback_url
from engine.retry import RetryPolicy

SECRET = "s3cr3t-value"
URL = "https://hooks.example.com/jobs/job_123/callback"
PUBLIC = "93.184.216.34"
PAYLOAD = {"job_id": "job_123", "idx": 0, "status": "done", "idempotency_key": "job_123:0:0"}


async def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC]


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + 1  # +1: each attempt lands in a new second, so its stamp differs


class Receiver:
    """A mock network: answers in turn from ``answers`` (a response or an exception), then 200."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else httpx.Response(200)
        if isinstance(answer, Exception):
            raise answer
        return answer


def sender(clock: FakeClock, receiver: Receiver, **kw) -> HttpCallbackSender:
    kw.setdefault("backoff", [5, 30, 300])
    return HttpCallbackSender(SECRET, sleep=clock.sleep, clock=clock, resolver=public_resolver,
                              rng=random.Random(1), transport=receiver.transport, **kw)


def stamp(request: httpx.Request) -> int:
    return int(request.headers["Authorization"].split(" ")[1].split(".")[0])


def test_signature_round_trip_and_rejections():
    body = b'{"a":1}'
    header = authorization_header(SECRET, body, now=1000)
    assert header == f"Bearer 1000.{sign(SECRET, 1000, body)}"
    assert verify_callback(body, header, SECRET, now=1000 + 300)
    assert not verify_callback(body, header, SECRET, now=1000 + 301), "stale"
    assert not verify_callback(body, header, SECRET, now=1000 - 301), "from the future"
    assert not verify_callback(body + b" ", header, SECRET, now=1000), "body changed"
    assert not verify_callback(body, header, "other", now=1000), "other secret"
    assert not verify_callback(body, None, SECRET, now=1000)
    assert not verify_callback(body, "Bearer abc.def", SECRET, now=1000)
    assert verify_callback(body, header.upper().replace("BEARER", "Bearer"), SECRET, now=1000), "hex in capitals"
    # The exact scheme: hex HMAC-SHA256 over b"<t>." + body.
    assert sign(SECRET, 1000, body) == hmac.new(SECRET.encode(), b"1000." + body, hashlib.sha256).hexdigest()


async def test_headers_body_and_signature_on_the_wire():
    clock, receiver = FakeClock(), Receiver(httpx.Response(204))
    delivery = await sender(clock, receiver).send(URL, PAYLOAD, "job_123:0:0")
    assert delivery.delivered and delivery.attempts == 1
    [request] = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "job_123:0:0"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.url.host == PUBLIC and request.extensions["sni_hostname"] == "hooks.example.com"
    assert json.loads(request.content) == PAYLOAD
    assert verify_callback(request.content, request.headers["Authorization"], SECRET, now=clock.now)
    assert request.headers["Authorization"].startswith(f"Bearer {int(clock.now)}.")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
async def test_retryable_statuses_are_retried_and_each_attempt_signed_afresh(status):
    clock, receiver = FakeClock(), Receiver(httpx.Response(status), httpx.Response(status))
    delivery = await sender(clock, receiver).send(URL, PAYLOAD, "job_123:0:0")
    assert delivery.delivered and delivery.attempts == 3
    assert len(clock.sleeps) == 2 and 0 <= clock.sleeps[0] <= 5 and 0 <= clock.sleeps[1] <= 30
    assert len({stamp(r) for r in receiver.requests}) == 3, "each attempt carries its own timestamp"
    for request in receiver.requests:
        assert verify_callback(request.content, request.headers["Authorization"], SECRET, now=stamp(request))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 301, 302])
async def test_final_statuses_are_not_retried(status):
    clock = FakeClock()
    receiver = Receiver(httpx.Response(status, headers={"Location": "http://169.254.169.254/"}))
    delivery = await sender(clock, receiver).send(URL, PAYLOAD, "k")
    assert not delivery.delivered and delivery.status == status
    assert len(receiver.requests) == 1 and clock.sleeps == []


async def test_connection_errors_and_timeouts_retry_then_give_up():
    clock = FakeClock()
    receiver = Receiver(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
                        httpx.ConnectError("refused"))
    delivery = await sender(clock, receiver).send(URL, PAYLOAD, "k")
    assert not delivery.delivered and delivery.attempts == 4 and len(receiver.requests) == 4
    assert len(clock.sleeps) == 3


async def test_retry_after_is_honoured_up_to_the_largest_delay():
    clock = FakeClock()
    receiver = Receiver(httpx.Response(429, headers={"Retry-After": "120"}),
                        httpx.Response(503, headers={"Retry-After": "100000"}))
    delivery = await sender(clock, receiver).send(URL, PAYLOAD, "k")
    assert delivery.delivered
    assert clock.sleeps[0] == 120 and clock.sleeps[1] == 300


async def test_deadline_stops_retrying():
    clock = FakeClock()
    receiver = Receiver(*[httpx.Response(503, headers={"Retry-After": "250"})] * 4)
    delivery = await sender(clock, receiver, deadline=400).send(URL, PAYLOAD, "k")
    assert not delivery.delivered and "deadline" in delivery.reason and delivery.attempts == 2


def test_full_jitter_stays_within_the_base_delay():
    rng = random.Random(7)
    policy = RetryPolicy((5, 30, 300), jitter=True)
    delays = [policy.delay(1, None, rng) for _ in range(200)]
    assert all(0 <= d <= 30 for d in delays) and max(delays) > 20 and min(delays) < 10


@pytest.mark.parametrize("url, reason", [
    ("http://hooks.example.com/cb", "https"),
    ("https://127.0.0.1/cb", "public"),
    ("https://10.0.0.8/cb", "public"),
    ("https://192.168.1.2/cb", "public"),
    ("https://169.254.169.254/latest/meta-data", "public"),
    ("https://[::1]/cb", "public"),
    ("https://user:pw@hooks.example.com/cb", "credentials"),
    ("ftp://hooks.example.com/cb", "http"),
])
async def test_refused_urls_without_an_allowlist(url, reason):
    with pytest.raises(CallbackRefused, match=reason):
        await check_callback_url(url, [], public_resolver)


async def test_hostname_resolving_to_a_private_address_is_refused():
    async def rebinding(host, port):
        return [PUBLIC, "10.1.2.3"]

    with pytest.raises(CallbackRefused):
        await check_callback_url(URL, [], rebinding)


async def test_allowlist_admits_only_its_hosts_and_allows_http():
    await check_callback_url("http://127.0.0.1:8080/cb", ["127.0.0.1:8080"])
    await check_callback_url("http://receiver.internal/cb", ["receiver.internal"])
    with pytest.raises(CallbackRefused, match="CALLBACK_ALLOWED_HOSTS"):
        await check_callback_url("https://hooks.example.com/cb", ["receiver.internal"])
    with pytest.raises(CallbackRefused):
        await check_callback_url("http://127.0.0.1:9999/cb", ["127.0.0.1:8080"])


async def test_no_request_reaches_a_refused_host():
    clock, receiver = FakeClock(), Receiver()
    delivery = await sender(clock, receiver).send("https://169.254.169.254/x", PAYLOAD, "k")
    assert not delivery.delivered and delivery.attempts == 0 and receiver.requests == []


async def test_missing_secret_is_undelivered_with_a_reason_and_no_request():
    receiver = Receiver()
    delivery = await HttpCallbackSender(None, transport=receiver.transport).send(URL, PAYLOAD, "k")
    assert not delivery.delivered and "GPU_CALLBACK_SECRET" in delivery.reason and receiver.requests == []


async def test_a_host_that_does_not_resolve_is_retried_as_a_connection_error():
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    clock, receiver = FakeClock(), Receiver()
    delivery = await HttpCallbackSender(SECRET, backoff=[1, 1], sleep=clock.sleep, clock=clock, resolver=nowhere,
                                        transport=receiver.transport).send(URL, PAYLOAD, "k")
    assert not delivery.delivered and delivery.attempts == 3 and "ConnectError" in delivery.reason
    assert receiver.requests == [] and len(clock.sleeps) == 2


async def test_dns_rebinding_is_refused_where_the_connection_is_made():
    """The name answers public to the up-front check and loopback when the connection is made:
    the connection is refused, nothing reaches the host on that address, and it is not retried."""
    from engine.receiver import LoopbackReceiver

    answers = [[PUBLIC]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["127.0.0.1"]

    clock = FakeClock()
    with LoopbackReceiver(SECRET) as receiver:
        delivery = await HttpCallbackSender(SECRET, sleep=clock.sleep, clock=clock, resolver=rebinding).send(
            f"https://rebind.example.com:{receiver.port}/cb", PAYLOAD, "k")
    assert not delivery.delivered and "not a public address" in delivery.reason
    assert delivery.attempts == 1 and clock.sleeps == [] and receiver.received == []


async def test_connections_go_to_the_checked_address_with_the_url_host_kept():
    """The transport connects to the address it checked (here a loopback receiver, admitted by a
    test policy), while the request still names the URL's host."""
    from engine.receiver import LoopbackReceiver

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    body = json.dumps(PAYLOAD).encode()
    with LoopbackReceiver(SECRET) as receiver:
        transport = PublicOnlyTransport(resolver=to_loopback, allow=lambda address: address == "127.0.0.1")
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(f"http://receiver.example.com:{receiver.port}/cb", content=body,
                                         headers={"Authorization": authorization_header(SECRET, body),
                                                  "Idempotency-Key": PAYLOAD["idempotency_key"]})
    assert response.status_code == 200
    assert [(r.path, r.headers["Host"], r.body) for r in receiver.received] == [
        ("/cb", f"receiver.example.com:{receiver.port}", body)]



def self_signed(tmp_path, name: str) -> tuple[str, str]:
    """A certificate for ``name`` and its key, as PEM files (cryptography comes with moto)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.parametrize("served_name, ok", [("receiver.example.com", True), ("elsewhere.example.com", False)])
async def test_tls_certificate_is_checked_against_the_url_host_not_the_address(tmp_path, served_name, ok):
    """The connection goes to the checked address, but TLS verifies the certificate for the URL's
    host: a server holding a certificate for another name is refused."""
    import ssl

    from engine.receiver import LoopbackReceiver

    cert, key = self_signed(tmp_path, served_name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)  # trusted: only the name can fail

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    body = json.dumps(PAYLOAD).encode()
    with LoopbackReceiver(SECRET) as receiver:
        receiver._server.socket = server_ctx.wrap_socket(receiver._server.socket, server_side=True)
        transport = PublicOnlyTransport(httpx.AsyncHTTPTransport(verify=client_ctx), to_loopback,
                                        allow=lambda address: address == "127.0.0.1")
        async with httpx.AsyncClient(transport=transport) as client:
            url = f"https://receiver.example.com:{receiver.port}/cb"
            headers = {"Authorization": authorization_header(SECRET, body), "Idempotency-Key": "job_123:0:0"}
            if ok:
                assert (await client.post(url, content=body, headers=headers)).status_code == 200
            else:
                with pytest.raises(httpx.ConnectError, match="Hostname mismatch|doesn't match"):
                    await client.post(url, content=body, headers=headers)
    assert len(receiver.received) == (1 if ok else 0)

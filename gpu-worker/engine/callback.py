"""Per-item callbacks (contract section 4): signing, verification, delivery with retries.

Wire format: POST JSON body, ``Idempotency-Key``, and ``Authorization: Bearer <t>.<sig>`` where
``sig = hex(HMAC-SHA256(secret, b"<t>." + body))``; each attempt is signed afresh.

``CallbackSender`` is the interface the pipeline uses. ``HttpCallbackSender`` delivers over
httpx with the retry policy and host allowlist; ``RecordingCallbackSender`` is the test double.
``verify_callback`` is the receiver's check, shipped here so both sides use the same code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpcore
import httpx

log = logging.getLogger("worker.callback")

SIGNATURE_TOLERANCE_SEC = 300
RETRYABLE_STATUS = {408, 425, 429}


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def authorization_header(secret: str, body: bytes, now: float | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"Bearer {timestamp}.{sign(secret, timestamp, body)}"


def verify_callback(
    body: bytes, authorization: str | None, secret: str, now: float | None = None,
    tolerance: int = SIGNATURE_TOLERANCE_SEC,
) -> bool:
    """True when ``authorization`` is a fresh, valid signature of ``body`` under ``secret``."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    token = authorization[len("Bearer "):].strip()
    timestamp_text, _, signature = token.partition(".")
    if not timestamp_text.isdigit() or not signature:
        return False
    timestamp = int(timestamp_text)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature.lower())


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    status: int | None = None
    reason: str = ""


class CallbackSender(Protocol):
    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery: ...


class CallbackRefused(Exception):
    """The callback URL is not allowed by the operator's policy."""


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_callback_url(url: str, allowed_hosts: Sequence[str], resolver: Resolver = resolve_host) -> None:
    """Raise ``CallbackRefused`` unless the operator's policy lets ``url`` receive callbacks.

    With an allowlist, only its hosts (``host`` or ``host:port``; http or https). Without one,
    only https to hosts whose every address is public (no loopback, private, link-local,
    metadata or other reserved addresses).
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused("callback_url has an invalid port") from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise CallbackRefused("callback_url must be an http(s) URL with a host and no credentials")
    if allowed_hosts:
        names = {host, f"{host}:{port}" if port else host}
        if not names & set(allowed_hosts):
            raise CallbackRefused(f"callback host {host} is not in CALLBACK_ALLOWED_HOSTS")
        return
    if parts.scheme != "https":
        raise CallbackRefused("callback_url must use https (set CALLBACK_ALLOWED_HOSTS to allow http hosts)")
    try:
        addresses = await _addresses(host, port or 443, resolver)
    except OSError as exc:
        raise CallbackRefused(f"callback host {host} does not resolve") from exc
    _refuse_unless_allowed(host, addresses, _is_public)


async def _addresses(host: str, port: int, resolver: Resolver) -> list[str]:
    """``host`` itself when it is an address (checked as it is, never resolved), else its addresses."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return await resolver(host, port)


def _refuse_unless_allowed(host: str, addresses: list[str], allow: Callable[[str], bool]) -> None:
    if not addresses or not all(allow(a) for a in addresses):
        raise CallbackRefused(f"callback host {host} is not a public address")


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network back end, connecting only to addresses ``allow`` admits (public ones).

    The address is checked where the connection is made, on the very address connected to:
    resolving once to check and letting the HTTP client resolve again to connect would let a
    DNS-rebinding host answer public to the check and private to the connection. TLS still
    verifies the URL's host name: httpcore hands it to the TLS layer, not the address."""

    def __init__(self, resolver: Resolver = resolve_host, allow: Callable[[str], bool] = _is_public) -> None:
        self._resolver = resolver
        self._allow = allow
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _addresses(host, port, self._resolver)
        except OSError as exc:  # a connection failure like any other: retried
            raise httpcore.ConnectError(f"callback host {host} does not resolve") from exc
        _refuse_unless_allowed(host, addresses, self._allow)
        return await self._inner.connect_tcp(addresses[0], port, timeout=timeout, local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise CallbackRefused("callbacks do not go to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def public_only_transport(resolver: Resolver = resolve_host,
                          allow: Callable[[str], bool] = _is_public) -> httpx.AsyncHTTPTransport:
    """httpx's transport with a ``PublicOnlyBackend`` under it. httpx takes no network back end
    argument; its connection pool is httpcore's, which does (httpx is pinned in requirements.txt).
    No proxies from the environment: a proxy would make the connection, not this check."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=PublicOnlyBackend(resolver, allow)
    )
    return transport


def retry_delay(attempt: int, backoff: Sequence[float], retry_after: float | None, rng: random.Random) -> float:
    """Full-jitter delay before retry number ``attempt`` (0-based), honouring Retry-After up to the cap."""
    cap = max(backoff)
    delay = rng.uniform(0, backoff[attempt])
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: ignored, the jittered backoff applies


class HttpCallbackSender:
    """Delivers one callback: 2xx succeeds; connection errors, timeouts, 408/425/429/5xx retry."""

    def __init__(
        self,
        secret: str | None,
        *,
        backoff: Sequence[float] = (5.0, 30.0, 300.0),
        timeout: float = 10.0,
        deadline: float = 900.0,
        allowed_hosts: Sequence[str] = (),
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve_host,
        rng: random.Random | None = None,
    ) -> None:
        self._secret = secret
        self.backoff = list(backoff)
        self.deadline = deadline
        self.allowed_hosts = list(allowed_hosts)
        self._timeout = timeout
        self._client = client
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sleep = sleep
        self._clock = clock
        self._resolver = resolver
        self._rng = rng or random.Random()

    def _http(self) -> httpx.AsyncClient:
        """The shared client; a new one if the caller runs a different event loop than before."""
        loop = asyncio.get_running_loop()
        if self._client is None or (self._client_loop is not None and self._client_loop is not loop):
            # Redirects are never followed: a 3xx could point at a host the policy refuses. Without
            # an allowlist every connection is checked again where it is made (DNS rebinding).
            transport = None if self.allowed_hosts else public_only_transport(self._resolver)
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False, transport=transport,
                                             trust_env=bool(self.allowed_hosts))
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        if not self._secret:
            return Delivery(False, 0, reason="GPU_CALLBACK_SECRET is not set")
        try:
            await check_callback_url(url, self.allowed_hosts, self._resolver)
        except CallbackRefused as exc:
            return Delivery(False, 0, reason=str(exc))
        body = encode_body(payload)
        started = self._clock()
        attempts = 0
        while True:
            attempts += 1
            try:
                status, retry_after, reason = await self._attempt(url, body, idempotency_key)
            except CallbackRefused as exc:  # the address it would connect to is not public: final
                return Delivery(False, attempts, None, str(exc))
            if status is not None and 200 <= status < 300:
                return Delivery(True, attempts, status)
            retryable = status is None or status in RETRYABLE_STATUS or status >= 500
            if not retryable:
                return Delivery(False, attempts, status, reason or f"receiver answered {status}")
            if attempts > len(self.backoff):
                return Delivery(False, attempts, status, f"gave up after {attempts} attempts: {reason}")
            delay = retry_delay(attempts - 1, self.backoff, retry_after, self._rng)
            if self._clock() + delay - started > self.deadline:
                return Delivery(False, attempts, status, f"callback deadline reached: {reason}")
            log.info("callback.retry", extra={"attempt": attempts, "status": status, "delay_s": round(delay, 2)})
            await self._sleep(delay)

    async def _attempt(self, url: str, body: bytes, idempotency_key: str) -> tuple[int | None, float | None, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "Authorization": authorization_header(self._secret or "", body, self._clock()),
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return None, None, "timed out"
        except httpx.TransportError as exc:
            return None, None, f"connection failed ({type(exc).__name__})"
        return response.status_code, _retry_after_seconds(response), f"receiver answered {response.status_code}"


@dataclass
class RecordingCallbackSender:
    """Test double: records every payload and answers as told (delivered by default)."""

    deliver: bool = True
    sent: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        self.sent.append((url, payload, idempotency_key))
        return Delivery(self.deliver, 1, 200 if self.deliver else None, "" if self.deliver else "refused by double")

"""Per-item callbacks (contract section 4): signing, verification, delivery with retries.

Wire format: POST JSON body, ``Idempotency-Key``, and ``Authorization: Bearer <t>.<sig>`` where
``sig = hex(HMAC-SHA256(secret, b"<t>." + body))``; each attempt is signed afresh.

``CallbackSender`` is the interface the pipeline uses. ``HttpCallbackSender`` delivers over
httpx with the retry policy (``engine.retry``) and the address policy (``engine.callback_policy``);
``RecordingCallbackSender`` is the test double. ``verify_callback`` is the receiver's check,
shipped here so both sides use the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from engine.callback_policy import (CallbackRefused, CallbackUnresolvable, PublicOnlyTransport, Resolver,
                                    check_callback_url, resolve_host)
from engine.retry import RetryPolicy, is_retryable, retry_after_seconds

log = logging.getLogger("worker.callback")

SIGNATURE_TOLERANCE_SEC = 300
# The receiver's answer is judged by its status and Retry-After: at most this much of its body
# is read (a few KiB: enough to let a short answer leave the connection reusable).
MAX_RESPONSE_BYTES = 4096
_BEARER = re.compile(r"Bearer ([0-9]{1,12})\.([0-9a-fA-F]{64})")

__all__ = ["CallbackRefused", "CallbackSender", "Delivery", "HttpCallbackSender", "RecordingCallbackSender",
           "authorization_header", "check_callback_url", "encode_body", "sign", "verify_callback"]


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def authorization_header(secret: str, body: bytes, now: float | None = None) -> str:
    timestamp = int(time.time() if now is None else now)
    return f"Bearer {timestamp}.{sign(secret, timestamp, body)}"


def verify_callback(
    body: Any, authorization: Any, secret: Any, now: float | None = None,
    tolerance: int = SIGNATURE_TOLERANCE_SEC,
) -> bool:
    """True when ``authorization`` is a fresh, valid signature of ``body`` under ``secret``.

    False for anything else, whatever it is: the header is matched against the exact ASCII
    shape ``Bearer <1-12 digits>.<64 hex digits>`` before any number is read from it.
    """
    try:
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        if not isinstance(body, bytes) or not isinstance(authorization, str):
            return False
        if not isinstance(secret, str) or not secret:
            return False
        match = _BEARER.fullmatch(authorization.strip(" \t"))
        if match is None:
            return False
        timestamp = int(match.group(1))
        current = time.time() if now is None else float(now)
        if not math.isfinite(current) or abs(current - timestamp) > tolerance:
            return False
        return hmac.compare_digest(sign(secret, timestamp, body), match.group(2).lower())
    except (ValueError, TypeError, OverflowError, UnicodeError):  # e.g. a secret that is not encodable
        return False


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    status: int | None = None
    reason: str = ""


class CallbackSender(Protocol):
    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery: ...

    async def refusal(self, url: str) -> str | None:
        """Why the callback policy refuses ``url`` (no callback to it would be sent), or None."""
        ...


async def _read_at_most(response: httpx.Response, limit: int) -> int:
    """Read at most about ``limit`` bytes of the body (the rest is never read); returns the count."""
    if response.is_stream_consumed:  # a body the transport handed over already read (test doubles)
        return len(response.content)
    read = 0
    async with contextlib.aclosing(response.aiter_raw()) as chunks:
        async for chunk in chunks:
            read += len(chunk)
            if read >= limit:
                break
    return read


class HttpCallbackSender:
    """Delivers one callback: 2xx succeeds; connection errors, timeouts, 408/425/429/5xx retry.

    Each attempt is bounded as a whole: ``timeout`` covers connecting, sending, the answer's
    headers and the few KiB of its body that are read, so a receiver trickling bytes cannot
    stretch it. ``transport`` replaces the network (tests pass an ``httpx.MockTransport``); without
    an allowlist it still sits under ``PublicOnlyTransport``, so the address policy always applies.
    """

    def __init__(
        self,
        secret: str | None,
        *,
        backoff: Sequence[float] = (5.0, 30.0, 300.0),
        timeout: float = 10.0,
        deadline: float = 900.0,
        allowed_hosts: Sequence[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve_host,
        rng: random.Random | None = None,
    ) -> None:
        self._secret = secret
        self.retry = RetryPolicy(tuple(backoff), jitter=True)
        self.deadline = deadline
        self.allowed_hosts = list(allowed_hosts)
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sleep = sleep
        self._clock = clock
        self._resolver = resolver
        self._rng = rng or random.Random()

    def _http(self) -> httpx.AsyncClient:
        """The shared client; a new one if the caller runs a different event loop than before."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # Redirects are never followed: a 3xx could point at a host the policy refuses. Without
            # an allowlist every connection is checked again where it is made (DNS rebinding).
            transport = self._transport
            if not self.allowed_hosts:
                transport = PublicOnlyTransport(transport, self._resolver)
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
        refused = await self.refusal(url)
        if refused is not None:
            return Delivery(False, 0, reason=refused)
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
            if not is_retryable(status):
                return Delivery(False, attempts, status, reason or f"receiver answered {status}")
            if not self.retry.may_retry(attempts - 1):
                return Delivery(False, attempts, status, f"gave up after {attempts} attempts: {reason}")
            delay = self.retry.delay(attempts - 1, retry_after, self._rng)
            if self._clock() + delay - started > self.deadline:
                return Delivery(False, attempts, status, f"callback deadline reached: {reason}")
            log.info("callback.retry", extra={"attempt": attempts, "status": status, "delay_s": round(delay, 2)})
            await self._sleep(delay)

    async def refusal(self, url: str) -> str | None:
        if not self._secret:
            return None  # no callback goes anywhere: each item's reports it (GPU_CALLBACK_SECRET)
        try:
            await check_callback_url(url, self.allowed_hosts, self._resolver)
        except CallbackRefused as exc:
            return str(exc)
        except CallbackUnresolvable:
            return None  # each attempt resolves again; a failure there is a connection error, retried
        return None

    async def _attempt(self, url: str, body: bytes, idempotency_key: str) -> tuple[int | None, float | None, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "Authorization": authorization_header(self._secret or "", body, self._clock()),
        }
        try:
            async with asyncio.timeout(self._timeout):
                async with self._http().stream("POST", url, content=body, headers=headers) as response:
                    await _read_at_most(response, MAX_RESPONSE_BYTES)
        except (TimeoutError, httpx.TimeoutException):
            return None, None, "timed out"
        except httpx.TransportError as exc:
            return None, None, f"connection failed ({type(exc).__name__})"
        except httpx.InvalidURL as exc:
            raise CallbackRefused(f"callback_url cannot be used ({exc})") from exc
        status = response.status_code
        return status, retry_after_seconds(response.headers), f"receiver answered {status}"


@dataclass
class RecordingCallbackSender:
    """Test double: records every payload and answers as told (delivered by default)."""

    deliver: bool = True
    sent: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    refuse: str | None = None  # as if the callback policy refused every URL, for this reason

    async def refusal(self, url: str) -> str | None:
        return self.refuse

    async def send(self, url: str, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        if self.refuse is not None:
            return Delivery(False, 0, reason=self.refuse)
        self.sent.append((url, payload, idempotency_key))
        return Delivery(self.deliver, 1, 200 if self.deliver else None, "" if self.deliver else "refused by double")

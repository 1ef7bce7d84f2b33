"""The Cloudflare Queues HTTP pull API as the pull adapter uses it (contract section 8).

    POST .../messages/pull {batch_size, visibility_timeout_ms}   lease up to that many messages
    POST .../messages/ack  {acks: [{lease_id}], retries: [{lease_id, delay_seconds}]}

``QueueClient`` wraps the two calls and turns httpx's errors and Cloudflare's error answers into
``QueueApiError`` (with ``retryable`` decided by ``engine.retry``). ``QueueMessage.from_api``
reads one leased message and survives malformed fields (logged, never raised): a message that
has a lease can always be acked or retried. ``decode_body`` reads the job a message carries;
anything unreadable is ``JobParseError``.

The API token is sent as a bearer token and never logged; errors carry the status and
Cloudflare's own error messages only.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import JobParseError, WorkerError
from engine.job import unwrap_event
from engine.retry import is_retryable
from engine.settings import Settings

log = logging.getLogger("worker.queue_pull")

HTTP_TIMEOUT_SEC = 30.0


class QueueApiError(WorkerError):
    """The queue API could not be reached or refused a call. ``retryable``: trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


# -- the API client ------------------------------------------------------------------------------


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class QueueMessage:
    id: str
    lease_id: str
    body: Any
    attempts: int | None  # None when the API's answer did not hold a count
    content_type: str | None
    timestamp_ms: int | None

    @classmethod
    def from_api(cls, raw: Any) -> QueueMessage | None:
        """One entry of ``result.messages``; None when it has no lease (it cannot be acked).

        Any other field of the wrong type is logged and read as absent: the message is still
        handled, and acked or retried by its lease."""
        lease_id = _text(raw.get("lease_id"), 4096) if isinstance(raw, dict) else None
        if lease_id is None:
            log.error("message.no_lease", extra={"message_id": _text(raw.get("id")) if isinstance(raw, dict) else None})
            return None
        metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        message = cls(
            id=_text(raw.get("id")) or "",
            lease_id=lease_id,
            body=raw.get("body"),
            attempts=_count(raw.get("attempts")),
            content_type=_text(metadata.get("CF-Content-Type")),
            timestamp_ms=_count(raw.get("timestamp_ms")),
        )
        wrong = [name for name, value, read in (("id", raw.get("id"), message.id or None),
                                                ("attempts", raw.get("attempts"), message.attempts),
                                                ("timestamp_ms", raw.get("timestamp_ms"), message.timestamp_ms))
                 if value is not None and read is None]
        if wrong:
            log.warning("message.malformed_fields", extra={"message_id": message.id, "fields": wrong})
        return message


def missing_settings(settings: Settings) -> list[str]:
    """The settings the adapter cannot run without, by environment variable name."""
    wanted = {"CF_ACCOUNT_ID": settings.cf_account_id, "CF_QUEUE_ID": settings.cf_queue_id,
              "CF_API_TOKEN": settings.cf_api_token.get_secret_value() if settings.cf_api_token else None}
    return [name for name, value in wanted.items() if not value]


class QueueClient:
    """A thin wrapper over the two calls of the pull API; httpx errors become ``QueueApiError``."""

    def __init__(self, http: httpx.AsyncClient, *, api_base: str, account_id: str, queue_id: str,
                 token: str) -> None:
        self._http = http
        self._url = f"{api_base.rstrip('/')}/accounts/{account_id}/queues/{queue_id}/messages"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> QueueClient:
        missing = missing_settings(settings)
        if missing:
            raise ValueError(f"the queue_pull adapter needs {', '.join(missing)}")
        assert settings.cf_account_id and settings.cf_queue_id and settings.cf_api_token
        return cls(http, api_base=settings.cf_api_base, account_id=settings.cf_account_id,
                   queue_id=settings.cf_queue_id, token=settings.cf_api_token.get_secret_value())

    def __repr__(self) -> str:  # never the headers: they hold the token
        return f"QueueClient({self._url})"

    async def pull(self, batch_size: int, visibility_timeout_ms: int) -> list[QueueMessage]:
        result = await self._post("pull", {"batch_size": batch_size, "visibility_timeout_ms": visibility_timeout_ms})
        entries = result.get("messages")
        if entries is None:
            return []
        if not isinstance(entries, list):
            log.error("pull.malformed", extra={"reason": f"result.messages is a {type(entries).__name__}"})
            return []
        return [message for message in map(QueueMessage.from_api, entries) if message is not None]

    async def ack(self, acks: Sequence[str] = (), retries: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
        body = {"acks": [{"lease_id": lease} for lease in acks],
                "retries": [{"lease_id": lease, "delay_seconds": delay} for lease, delay in retries]}
        result = await self._post("ack", body)
        if result.get("warnings"):  # e.g. a lease that ran out before the ack
            log.warning("ack.warnings", extra={"warnings": result["warnings"]})
        return result

    async def _post(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        what = f"queue {verb}"
        try:
            response = await self._http.post(f"{self._url}/{verb}", json=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise QueueApiError(f"{what} timed out", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise QueueApiError(f"{what} failed ({type(exc).__name__})", retryable=True) from exc
        status = response.status_code
        if not 200 <= status < 300:
            retryable = is_retryable(status)
            raise QueueApiError(f"{what} answered {status}{_cloudflare_errors(response)}", status=status,
                                retryable=retryable)
        try:
            payload = response.json()
        except (ValueError, RecursionError) as exc:
            raise QueueApiError(f"{what} answered {status} with a body that is not JSON", status=status,
                                retryable=True) from exc
        if not isinstance(payload, dict) or payload.get("success") is False:
            raise QueueApiError(f"{what} was not successful{_cloudflare_errors(response)}", status=status,
                                retryable=True)
        result = payload.get("result")
        return result if isinstance(result, dict) else {}


def _cloudflare_errors(response: httpx.Response) -> str:
    """Cloudflare's ``errors`` list as ': 10000 Authentication error; ...' (never request headers)."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, TypeError, RecursionError):
        return ""
    return f": {text[:300]}" if text else ""


# -- message bodies ------------------------------------------------------------------------------


def decode_body(message: QueueMessage) -> dict[str, Any]:
    """The job a message carries, read per its CF-Content-Type; ``JobParseError`` when unreadable."""
    content_type = message.content_type or "text"
    body = message.body
    if not isinstance(body, str):
        raise JobParseError("message body is not a string")
    if content_type in ("json", "bytes"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise JobParseError(f"{content_type} message body is not valid base64") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobParseError(f"{content_type} message body is not UTF-8 text") from exc
    elif content_type == "text":
        text = body
    else:
        raise JobParseError(f"message content type {content_type!r} cannot be read here; send jobs as json or text")
    return unwrap_event(text)


def job_id_of(job: dict[str, Any]) -> str | None:
    value = job.get("job_id")
    return value[:64] if isinstance(value, str) else None


def callback_url_of(job: dict[str, Any]) -> str | None:
    value = job.get("callback_url")
    return value if isinstance(value, str) else None

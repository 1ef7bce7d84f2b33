"""Object storage behind one small interface: R2/S3 through boto3, or a local folder.

Both are blocking underneath; ``ThreadedStorage`` runs their calls in worker threads so the
event loop never stalls. Library errors become the project's own at this edge:
missing object -> ``InputNotFound``, too big -> ``InputTooLarge``, anything else (a key the
backend cannot encode or the filesystem cannot hold included) -> ``StorageError``. Messages name the key, never credentials or local paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from engine.errors import InputNotFound, InputTooLarge, StorageError
from engine.settings import Settings

Metadata = dict[str, str]


class Storage(Protocol):
    async def get(self, key: str, max_bytes: int) -> bytes: ...

    async def put(self, key: str, data: bytes, content_type: str, metadata: Metadata | None = None) -> None: ...

    async def head(self, key: str) -> Metadata | None:
        """The object's user metadata, or None when there is no object at ``key``."""
        ...


class ThreadedStorage:
    """Async face over blocking ``_get``, ``_put``, ``_head``."""

    async def get(self, key: str, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._get, key, max_bytes)

    async def put(self, key: str, data: bytes, content_type: str, metadata: Metadata | None = None) -> None:
        await asyncio.to_thread(self._put, key, data, content_type, dict(metadata or {}))

    async def head(self, key: str) -> Metadata | None:
        return await asyncio.to_thread(self._head, key)

    def _get(self, key: str, max_bytes: int) -> bytes:
        raise NotImplementedError

    def _put(self, key: str, data: bytes, content_type: str, metadata: Metadata) -> None:
        raise NotImplementedError

    def _head(self, key: str) -> Metadata | None:
        raise NotImplementedError


def _too_large(key: str, size: int, max_bytes: int) -> InputTooLarge:
    return InputTooLarge(f"{key} is {size} bytes; the limit is {max_bytes} (MAX_INPUT_BYTES)")


class S3Storage(ThreadedStorage):
    def __init__(self, client: object, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        config = Config(
            region_name=settings.storage_region,
            signature_version="s3v4",
            retries={"max_attempts": settings.storage_max_attempts, "mode": "standard"},
            # R2 rejects the default CRC checksums on uploads; send them only when required.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Without a checksum botocore would SHA-256 every upload's body to sign it (the 10 MB
            # result PNG of a 12 MP photo each time); the signature covers the headers and
            # ``UNSIGNED-PAYLOAD``, and TLS to R2 protects the body on the way.
            s3={"payload_signing_enabled": False},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=64,
        )
        client = boto3.client(
            "s3",
            endpoint_url=settings.storage_s3_endpoint,
            aws_access_key_id=settings.storage_access_key.get_secret_value() if settings.storage_access_key else None,
            aws_secret_access_key=settings.storage_secret_key.get_secret_value() if settings.storage_secret_key else None,
            config=config,
        )
        return cls(client, settings.storage_bucket)

    def _get(self, key: str, max_bytes: int) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            size = int(response.get("ContentLength", 0))
            body = response["Body"]
            if size > max_bytes:
                body.close()
                raise _too_large(key, size, max_bytes)
            data = body.read(max_bytes + 1)
            body.close()
        except ClientError as exc:
            if _is_missing(exc):
                raise InputNotFound(f"no object at {key}") from exc
            raise StorageError(f"could not read {key} ({_error_code(exc)})") from exc
        except (BotoCoreError, UnicodeError) as exc:
            raise StorageError(f"could not read {key} ({type(exc).__name__})") from exc
        if len(data) > max_bytes:
            raise _too_large(key, len(data), max_bytes)
        return data

    def _put(self, key: str, data: bytes, content_type: str, metadata: Metadata) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata
            )
        except (ClientError, BotoCoreError, UnicodeError) as exc:
            raise StorageError(f"could not write {key} ({_error_code(exc)})") from exc

    def _head(self, key: str) -> Metadata | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise StorageError(f"could not check {key} ({_error_code(exc)})") from exc
        except (BotoCoreError, UnicodeError) as exc:
            raise StorageError(f"could not check {key} ({type(exc).__name__})") from exc
        return dict(response.get("Metadata", {}))


def _is_missing(exc: ClientError) -> bool:
    return _error_code(exc) in {"NoSuchKey", "404", "NotFound"}


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return type(exc).__name__


META_DIR = ".meta"


class LocalStorage(ThreadedStorage):
    """Objects as files under ``root``; each object's metadata in ``root/.meta/<key>``, a tree of
    the same shape beside the objects' (no sidecar name can be another key's). Writes are atomic.
    Filesystem errors (a name too long, a file where a folder should be, a name the filesystem
    cannot encode) become ``StorageError``; ``InvalidKey`` stops such keys earlier in the
    pipeline."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path_of(self, key: str) -> Path:
        if key.split("/", 1)[0] == META_DIR:
            raise StorageError(f"key {key!r} is reserved for the store's metadata")
        try:
            path = (self.root / key).resolve()
        except (OSError, ValueError) as exc:
            raise StorageError(f"key {key!r} cannot be stored here ({type(exc).__name__})") from exc
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} is outside the store")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / key

    def _get(self, key: str, max_bytes: int) -> bytes:
        path = self.path_of(key)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise _too_large(key, size, max_bytes)
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise InputNotFound(f"no object at {key}") from exc
        except (OSError, ValueError) as exc:
            raise StorageError(f"could not read {key} ({type(exc).__name__})") from exc

    def _put(self, key: str, data: bytes, content_type: str, metadata: Metadata) -> None:
        path = self.path_of(key)
        try:
            _atomic_write(path, data)
            _atomic_write(self._meta_path(key), json.dumps({"content_type": content_type, "metadata": metadata}).encode())
        except (OSError, ValueError) as exc:
            raise StorageError(f"could not write {key} ({type(exc).__name__})") from exc

    def _head(self, key: str) -> Metadata | None:
        path = self.path_of(key)
        try:
            if not path.is_file():
                return None
        except (OSError, ValueError) as exc:
            raise StorageError(f"could not check {key} ({type(exc).__name__})") from exc
        try:
            return dict(json.loads(self._meta_path(key).read_bytes())["metadata"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage_s3_endpoint:
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_local_dir)

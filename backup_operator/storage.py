"""The object store, through the `minio` SDK (MinIO first, any S3 with versioning).

Every failure to reach the store becomes `Unavailable`; missing keys and versions
become `NotFound`. Transient failures are retried by urllib3 with backoff.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import quote

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Tags
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.retention import Retention
from minio.versioningconfig import VersioningConfig

from .errors import Conflict, NotFound, Unavailable
from .settings import Settings
from .specs.objects import Lock, validate_tags

# Multipart part size: big enough to keep part counts low, small enough to stream.
MIB = 1024 * 1024
PART_SIZE = 16 * MIB
PARALLEL_PARTS = 3  # parts of one multipart upload sent at once (each held in memory)
MAX_PARTS = 10_000
DELETE_BATCH = 1000
DEFAULT_REGION = "us-east-1"  # what MinIO and most S3 servers take without one set

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NoSuchTagSet"}
# How servers say "this version has no retention / no legal hold".
_NO_LOCK_CODES = {
    "NoSuchObjectLockConfiguration",
    "ObjectLockConfigurationNotFoundError",
    "NoSuchObjectLegalHold",
    "NoSuchObjectRetention",
}
_UNAVAILABLE_CODES = {"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout"}


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def part_size_for(length: int) -> int:
    """S3 allows 10,000 parts: files beyond 160 GiB need parts larger than PART_SIZE."""
    needed = -(-length // MAX_PARTS)
    return max(PART_SIZE, -(-needed // MIB) * MIB)


@dataclass(frozen=True)
class StoredVersion:
    key: str
    version_id: str
    size: int
    etag: str | None
    is_latest: bool
    last_modified: datetime | None


def make_client(
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    secure: bool,
    region: str | None = None,
    retries: int = 3,
    read_timeout: float = 120,
) -> Minio:
    http = urllib3.PoolManager(
        maxsize=32,  # one pooled connection per upload thread
        # A hung server costs (retries + 1) x read_timeout before the store is "unavailable".
        timeout=urllib3.Timeout(connect=min(3, read_timeout), read=read_timeout),
        retries=urllib3.Retry(
            total=retries,
            backoff_factor=0.2,
            status_forcelist=[500, 502, 503, 504],
            allowed_methods=None,  # S3 PUTs of a whole body are idempotent
        ),
    )
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        secure=secure,
        region=region,
        http_client=http,
    )


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    try:
        yield
    except S3Error as error:
        if error.code in _NOT_FOUND_CODES:
            raise NotFound(f"{what}: {error.code}") from error
        if error.code in _UNAVAILABLE_CODES:
            raise Unavailable("object store", f"{what}: {error.code}") from error
        raise
    except (urllib3.exceptions.HTTPError, MinioException, OSError) as error:
        if isinstance(error, S3Error):  # pragma: no cover - handled above
            raise
        raise Unavailable("object store", f"{what}: {type(error).__name__}") from error


def attachment(filename: str) -> str:
    """A Content-Disposition that saves as `filename`, whatever its characters (RFC 5987)."""
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


class ObjectStore:
    def __init__(self, client: Minio, *, presigner: Minio | None = None) -> None:
        """`presigner`: a client for the store's public address, which signs download
        links only (no request goes through it)."""
        self.client = client
        self.presigner = presigner or client

    @classmethod
    def from_settings(
        cls, settings: Settings, *, probe_timeout: float | None = None
    ) -> ObjectStore:
        """The store as settings name it; with `probe_timeout`, a client for health
        checks that gives up after that many seconds, without retries."""
        access = settings.minio_access_key.get_secret_value()
        secret = settings.minio_secret_key.get_secret_value()
        presigner = None
        if settings.minio_public_endpoint:
            # A region given, so that signing never asks the (maybe unreachable) address.
            presigner = make_client(
                settings.minio_public_endpoint,
                access,
                secret,
                secure=settings.minio_secure,
                region=settings.minio_region or DEFAULT_REGION,
            )
        return cls(
            make_client(
                settings.minio_endpoint,
                access,
                secret,
                secure=settings.minio_secure,
                region=settings.minio_region,
                retries=3 if probe_timeout is None else 0,
                read_timeout=probe_timeout or settings.minio_read_timeout_seconds,
            ),
            presigner=presigner,
        )

    def ping(self) -> None:
        with translate_errors("list buckets"):
            self.client.list_buckets()

    def create_bucket(self, name: str, *, object_lock: bool = False) -> None:
        with translate_errors(f"create bucket {name}"):
            try:
                self.client.make_bucket(name, object_lock=object_lock)
            except S3Error as error:
                if error.code == "BucketAlreadyOwnedByYou":
                    pass  # adopting an existing bucket of ours is fine
                elif error.code == "BucketAlreadyExists":
                    raise Conflict(
                        f"bucket {name} exists in the object store and is not ours", field="name"
                    ) from error
                else:
                    raise
            self.client.set_bucket_versioning(name, VersioningConfig(ENABLED))

    def remove_bucket(self, name: str, *, force: bool = False) -> None:
        with translate_errors(f"remove bucket {name}"):
            if not self.client.bucket_exists(name):
                return
            if force:
                self.delete_versions(
                    name, [(v.key, v.version_id) for v in self.list_versions(name)]
                )
            self.client.remove_bucket(name)

    def put(
        self,
        bucket: str,
        key: str,
        data: Readable,
        length: int,
        *,
        lock: Lock | None = None,
        tags: dict[str, str] | None = None,
    ) -> tuple[str, str | None]:
        """Upload (multipart beyond one part), under `lock` and with `tags` if given;
        answer (version id, etag)."""
        s3_tags = None
        if tags:
            s3_tags = Tags.new_object_tags()
            s3_tags.update(tags)
        retention = None
        if lock is not None and lock.mode is not None and lock.retain_until is not None:
            retention = Retention(lock.mode, lock.retain_until)
        with translate_errors(f"put {bucket}/{key}"):
            result = self.client.put_object(
                bucket,
                key,
                cast(BinaryIO, data),
                length,
                part_size=part_size_for(length),
                num_parallel_uploads=PARALLEL_PARTS,
                retention=retention,
                legal_hold=bool(lock and lock.legal_hold),
                tags=s3_tags,
            )
        return result.version_id or "null", result.etag

    def get(self, bucket: str, key: str, version_id: str) -> Any:
        with translate_errors(f"get {bucket}/{key}@{version_id}"):
            return self.client.get_object(bucket, key, version_id=version_id)

    def download_url(
        self, bucket: str, key: str, version_id: str, *, filename: str, expires: timedelta
    ) -> str:
        """A presigned GET of exactly this version, which a browser saves as `filename`:
        the bytes go from the store to the browser, never through this process."""
        with translate_errors(f"presign {bucket}/{key}@{version_id}"):
            return self.presigner.presigned_get_object(
                bucket,
                key,
                expires=expires,
                version_id=version_id,
                response_headers={"response-content-disposition": attachment(filename)},
            )

    def read_range(self, bucket: str, key: str, version_id: str, offset: int, length: int) -> bytes:
        """`length` bytes of a version from `offset` (a ranged GET)."""
        with translate_errors(f"get {bucket}/{key}@{version_id}"):
            response = self.client.get_object(
                bucket, key, version_id=version_id, offset=offset, length=length
            )
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        if len(data) != length:
            raise ValueError(f"{key}@{version_id}: {len(data)} bytes from {offset}, not {length}")
        return data

    def content(self, bucket: str, key: str, version_id: str, chunk: int = MIB) -> Iterator[bytes]:
        """Stream one version's bytes; the connection goes back to the pool after."""
        response = self.get(bucket, key, version_id)
        try:
            with translate_errors(f"read {bucket}/{key}@{version_id}"):
                yield from response.stream(chunk)
        finally:
            response.close()
            response.release_conn()

    def list_versions(self, bucket: str, prefix: str | None = None) -> Iterator[StoredVersion]:
        with translate_errors(f"list versions of {bucket}"):
            for item in self.client.list_objects(
                bucket, prefix=prefix, recursive=True, include_version=True
            ):
                if item.is_delete_marker:
                    continue
                yield StoredVersion(
                    key=item.object_name or "",
                    version_id=item.version_id or "null",
                    size=item.size or 0,
                    etag=item.etag,
                    is_latest=str(item.is_latest).lower() == "true",
                    last_modified=item.last_modified,
                )

    def delete_version(self, bucket: str, key: str, version_id: str) -> None:
        with translate_errors(f"delete {bucket}/{key}@{version_id}"):
            self.client.remove_object(bucket, key, version_id=version_id)

    def delete_versions(self, bucket: str, versions: list[tuple[str, str]]) -> dict[str, str]:
        """Batched DeleteObjects; answers {version_id: error code} for those refused."""
        refused: dict[str, str] = {}
        with translate_errors(f"delete versions in {bucket}"):
            for start in range(0, len(versions), DELETE_BATCH):
                batch = [DeleteObject(k, v) for k, v in versions[start : start + DELETE_BATCH]]
                for error in self.client.remove_objects(bucket, batch):
                    refused[error.version_id or ""] = error.code or "Error"
        return refused

    def locked(self, bucket: str, key: str, version_id: str, now: datetime) -> str | None:
        """Why the store would refuse to delete this version (object lock retention not yet
        expired, or a legal hold), or None."""
        with translate_errors(f"read the lock of {bucket}/{key}@{version_id}"):
            try:
                retention = self.client.get_object_retention(bucket, key, version_id=version_id)
            except S3Error as error:
                if error.code not in _NO_LOCK_CODES:
                    raise
                retention = None
            if retention is not None and retention.retain_until_date is not None:
                until = retention.retain_until_date
                if until > now:
                    return f"{retention.mode} retention until {until.isoformat()}"
            try:
                held = self.client.is_object_legal_hold_enabled(bucket, key, version_id=version_id)
            except S3Error as error:
                if error.code not in _NO_LOCK_CODES:
                    raise
                held = False
            return "legal hold" if held else None

    def set_tags(self, bucket: str, key: str, version_id: str, tags: dict[str, str]) -> None:
        validate_tags(tags)
        with translate_errors(f"tag {bucket}/{key}@{version_id}"):
            if not tags:
                self.client.delete_object_tags(bucket, key, version_id=version_id)
                return
            s3_tags = Tags.new_object_tags()
            s3_tags.update(tags)
            self.client.set_object_tags(bucket, key, s3_tags, version_id=version_id)

    def get_tags(self, bucket: str, key: str, version_id: str) -> dict[str, str]:
        with translate_errors(f"read tags of {bucket}/{key}@{version_id}"):
            return dict(self.client.get_object_tags(bucket, key, version_id=version_id) or {})

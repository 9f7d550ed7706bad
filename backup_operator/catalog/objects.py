"""Backup objects and their versions' rows (services.objects keeps them in step with
the object store)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from sqlalchemy import ColumnElement, func, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased, lazyload

from ..errors import Conflict, Invalid, NotFound
from ..specs.objects import Lock
from .arrays import in_ids
from .files import link_contents, versions_holding_duplicates
from .models import BackupJob, BackupObject, Bucket, File, ObjectVersion, Tag
from .pages import Page, keyset, page_of, scalar_page
from .raw import named_rows
from .rows import get_row


def object_key(prefix: str, path: str) -> str:
    path = path.lstrip("/")
    return f"{prefix}/{path}" if prefix else path


class HashingReader:
    """Counts and hashes what the uploader reads, so content is verified in one pass."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


@dataclass(frozen=True)
class ContentTarget:
    """Where a canonical file's content goes: its bucket and key, the lock and the tags
    its new version takes."""

    file: File
    bucket_id: int
    bucket: str
    key: str
    lock: Lock | None
    tags: dict[str, str]
    job_id: int


def content_target(session: Session, file_id: int, length: int) -> ContentTarget:
    """A registered file whose content is still to be stored (locked), or why it cannot be."""
    file = session.scalar(
        select(File).where(File.id == file_id).options(lazyload(File.canonical)).with_for_update()
    )
    if file is None:
        raise NotFound(f"file {file_id} not found", field="file_id")
    if file.is_duplicate:
        raise Conflict(
            f"file {file_id} is a duplicate of file {file.canonical_file_id}; "
            "its content is already stored",
            field="file_id",
        )
    if file.object_version_id is not None:
        raise Conflict(f"file {file_id} is already stored", field="file_id")
    if length != file.size:
        raise Invalid(
            f"content is {length} bytes, the file was registered with {file.size}", field="size"
        )
    job = session.get_one(BackupJob, file.job_id)
    bucket = session.get_one(Bucket, file.bucket_id)
    key = object_key(job.key_prefix, file.path)
    lock = None
    if bucket.object_lock:
        from .retention.immutability import lock_for, locking_policies  # (a cycle at import)

        policies = locking_policies(session, bucket_id=bucket.id, source_system=job.source_system)
        lock = lock_for(policies, key, datetime.now(UTC))
    return ContentTarget(file, bucket.id, bucket.name, key, lock, job.tags, job.id)


def record_content(
    session: Session, target: ContentTarget, version_id: str, etag: str | None
) -> ObjectVersion:
    """The stored content's version, recorded and linked to its file (flushed)."""
    file = target.file
    links = record_versions(
        session,
        target.bucket_id,
        [Upload(target.key, version_id, file.size, file.sha256, etag, target.lock)],
        target.tags,
        job_id=target.job_id,
    )
    link_contents(session, target.bucket_id, links)
    return session.get_one(ObjectVersion, links[0][1])


@dataclass(frozen=True)
class Upload:
    """A content stored as an S3 version of `key`; or, for a pack, the contents in
    `packed` (sha256, offset) in one version."""

    key: str
    version_id: str
    size: int
    sha256: str
    etag: str | None
    lock: Lock | None = None
    packed: tuple[tuple[str, int], ...] = ()

    def contents(self) -> list[tuple[str, int | None]]:
        """(sha256, offset in the version or None for the whole object)."""
        if self.packed:
            return list(self.packed)
        return [(self.sha256, None)]


# Bulk rows on the session's connection with binary arrays (as files are registered):
# through the ORM, recording one version per file was two fifths of a plain backup's
# Python time.
_INSERT_OBJECTS = """
    INSERT INTO backup_objects (bucket_id, key, is_pack)
    SELECT %(bucket_id)s, t.key, t.is_pack FROM unnest(%(keys)b::text[], %(packs)b::boolean[])
        AS t(key, is_pack)
    ON CONFLICT (bucket_id, key) DO NOTHING
"""
_INSERT_VERSIONS = """
    WITH inserted AS (
    INSERT INTO object_versions (object_id, job_id, version_id, size, sha256, etag,
                                 lock_mode, retain_until, legal_hold)
    SELECT o.id, %(job_id)s, t.version_id, t.size, t.sha256, t.etag, t.lock_mode,
           t.retain_until, t.legal_hold
    FROM unnest(%(keys)b::text[], %(versions)b::text[], %(sizes)b::bigint[],
                %(shas)b::text[], %(etags)b::text[], %(modes)b::text[],
                %(until)b::timestamptz[], %(holds)b::boolean[])
        AS t(key, version_id, size, sha256, etag, lock_mode, retain_until, legal_hold)
    JOIN backup_objects o ON o.bucket_id = %(bucket_id)s AND o.key = t.key
    RETURNING id, object_id, version_id)
    SELECT inserted.id, inserted.object_id, inserted.version_id, o.key
    FROM inserted JOIN backup_objects o ON o.id = inserted.object_id
"""


def record_versions(
    session: Session,
    bucket_id: int,
    uploads: list[Upload],
    tags: dict[str, str] | None = None,
    *,
    job_id: int | None,
) -> list[tuple[str, int, int | None]]:
    """Record the versions `job_id` uploaded, in bulk (the caller links their contents
    and commits): answers where each content now is (sha256, version id, offset). With
    `tags` (the job's, put on the new versions in S3), they become the objects' tags."""
    if not uploads:
        return []
    packs = {u.key for u in uploads if u.packed}
    keys = sorted({u.key for u in uploads})
    named_rows(
        session,
        _INSERT_OBJECTS,
        {"bucket_id": bucket_id, "keys": keys, "packs": [key in packs for key in keys]},
    )
    rows = named_rows(
        session,
        _INSERT_VERSIONS,
        {
            "bucket_id": bucket_id,
            "job_id": job_id,
            "keys": [u.key for u in uploads],
            "versions": [u.version_id for u in uploads],
            "sizes": [u.size for u in uploads],
            "shas": [u.sha256 for u in uploads],
            "etags": [u.etag for u in uploads],
            "modes": [u.lock.mode if u.lock else None for u in uploads],
            "until": [u.lock.retain_until if u.lock else None for u in uploads],
            "holds": [bool(u.lock and u.lock.legal_hold) for u in uploads],
        },
    )
    # RETURNING's order is not the SELECT's: versions are matched by (key, S3 version id).
    recorded = {(row.key, row.version_id): (row.id, row.object_id) for row in rows}
    versions = [recorded[(u.key, u.version_id)] for u in uploads]
    if tags:  # each new version's, as S3 has them; older versions keep their own
        session.execute(
            insert(Tag),
            [
                {"object_id": object_id, "version_id": version, "key": key, "value": value}
                for version, object_id in versions
                for key, value in tags.items()
            ],
        )
    return [
        (sha, version, offset)
        for upload, (version, _) in zip(uploads, versions, strict=True)
        for sha, offset in upload.contents()
    ]


def recorded_versions(
    session: Session, bucket_id: int, version_ids: Sequence[str]
) -> set[tuple[str, str]]:
    """(key, S3 version id) of those of `version_ids` the bucket's catalog records."""
    rows = session.execute(
        select(BackupObject.key, ObjectVersion.version_id)
        .join(ObjectVersion, ObjectVersion.object_id == BackupObject.id)
        .where(BackupObject.bucket_id == bucket_id, ObjectVersion.version_id.in_(version_ids))
    )
    return {(key, version_id) for key, version_id in rows}


def is_current(tag: type[Tag] = Tag) -> ColumnElement[bool]:
    """A tag of its object's latest live version: the object's tags (one index probe)."""
    latest = (
        select(func.max(ObjectVersion.id))
        .where(ObjectVersion.object_id == tag.object_id, ObjectVersion.deleted_at.is_(None))
        .scalar_subquery()
    )
    return tag.version_id == latest


def get_object(session: Session, object_id: int) -> BackupObject:
    return get_row(session, BackupObject, object_id, what="backup object", field="object_id")


def list_objects(
    session: Session,
    *,
    bucket_id: int | None = None,
    key_prefix: str | None = None,
    tag: tuple[str, str | None] | None = None,
    after: int | None,
    limit: int,
) -> Page[BackupObject]:
    query = select(BackupObject)
    if bucket_id is not None:
        query = query.where(BackupObject.bucket_id == bucket_id)
    if key_prefix:
        query = query.where(BackupObject.key.startswith(key_prefix, autoescape=True))
    if tag is not None:
        tagged = select(Tag.object_id).where(Tag.key == tag[0], is_current())
        if tag[1] is not None:
            tagged = tagged.where(Tag.value == tag[1])
        query = query.where(BackupObject.id.in_(tagged))
    return scalar_page(session, query, BackupObject.id, after=after, limit=limit)


@dataclass(frozen=True)
class LatestVersion:
    object: BackupObject
    version: ObjectVersion


def latest_versions(
    session: Session, *, bucket_id: int | None = None, after: int | None, limit: int
) -> Page[LatestVersion]:
    """The newest live version of each object, in object order (one index probe each)."""
    newest = (
        select(ObjectVersion)
        .where(ObjectVersion.object_id == BackupObject.id, ObjectVersion.deleted_at.is_(None))
        .order_by(ObjectVersion.id.desc())
        .limit(1)
        .lateral()
    )
    version_alias = aliased(ObjectVersion, newest)
    query = select(BackupObject, version_alias).join(newest, true())
    if bucket_id is not None:
        query = query.where(BackupObject.bucket_id == bucket_id)
    rows = session.execute(keyset(query, BackupObject.id, after, limit)).all()
    items = [LatestVersion(obj, ver) for obj, ver in rows]
    return page_of(items, limit, lambda item: item.object.id)


def list_versions(
    session: Session, object_id: int, *, include_deleted: bool, after: int | None, limit: int
) -> Page[ObjectVersion]:
    get_object(session, object_id)
    query = select(ObjectVersion).where(ObjectVersion.object_id == object_id)
    if not include_deleted:
        query = query.where(ObjectVersion.deleted_at.is_(None))
    return scalar_page(session, query, ObjectVersion.id, after=after, limit=limit)


def get_version(
    session: Session, object_id: int, version_id: str, *, for_update: bool = False
) -> ObjectVersion:
    query = select(ObjectVersion).where(
        ObjectVersion.object_id == object_id, ObjectVersion.version_id == version_id
    )
    if for_update:
        query = query.with_for_update()
    found = session.scalar(query)
    if found is None:
        raise NotFound(
            f"version {version_id!r} of object {object_id} not found", field="version_id"
        )
    return found


def version_to_delete(
    session: Session, object_id: int, version_id: str
) -> tuple[BackupObject, ObjectVersion]:
    """A live version (locked) that no duplicate file needs, with its object."""
    obj = get_object(session, object_id)
    version = get_version(session, object_id, version_id, for_update=True)
    if version.deleted_at is not None:
        raise Conflict(
            f"version {version_id!r} was deleted at {version.deleted_at.isoformat()}",
            field="version_id",
        )
    if versions_holding_duplicates(session, [version.id]):
        raise Conflict(
            f"version {version_id!r} is the stored content of duplicate files; "
            "deleting it would lose them",
            field="version_id",
        )
    return obj, version


def mark_deleted(version: ObjectVersion, *, reason: str, policy_id: int | None) -> None:
    version.deleted_at = func.now()
    version.deletion_reason = reason
    version.deleted_by_policy_id = policy_id


def object_bucket(session: Session, obj: BackupObject) -> Bucket:
    return session.get_one(Bucket, obj.bucket_id)


def mark_missing(session: Session, version_rows: list[int]) -> None:
    """Versions the store no longer has: deleted, saying so, and no file's content."""
    session.execute(
        update(ObjectVersion)
        .where(in_ids(ObjectVersion.id, version_rows))
        .values(
            deleted_at=func.now(), deletion_reason="missing from the object store (found by verify)"
        )
    )
    session.execute(
        update(File)
        .where(in_ids(File.object_version_id, version_rows))
        .values(object_version_id=None, pack_offset=None)
    )

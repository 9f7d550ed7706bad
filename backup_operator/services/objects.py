"""Backup objects kept in step with the object store, so that neither side is left half
done:
- upload: the S3 PUT comes first, the catalog rows second, in one transaction; if the
  catalog write fails the new S3 version is deleted again (no untracked object stays);
- delete: the version row is locked, the S3 DELETE is made, then the row is marked
  deleted and committed; if the store refuses, the transaction rolls back untouched.
"""

from __future__ import annotations

from typing import IO

from sqlalchemy.orm import Session

from ..catalog import objects
from ..catalog.models import ObjectVersion
from ..errors import Invalid
from ..storage import ObjectStore


def store_content(
    session: Session, store: ObjectStore, file_id: int, data: IO[bytes], length: int
) -> ObjectVersion:
    """Upload a canonical file's content as a new version of its key and link it."""
    target = objects.content_target(session, file_id, length)
    reader = objects.HashingReader(data)
    version_id, etag = store.put(
        target.bucket, target.key, reader, length, lock=target.lock, tags=target.tags
    )
    try:
        if reader.sha256.hexdigest() != target.file.sha256 or reader.size != target.file.size:
            raise Invalid("uploaded content does not match the registered sha256", field="sha256")
        version = objects.record_content(session, target, version_id, etag)
        session.commit()
    except BaseException:
        session.rollback()
        store.delete_version(target.bucket, target.key, version_id)  # no untracked object
        raise
    return version


def delete_version(
    session: Session,
    store: ObjectStore,
    object_id: int,
    version_id: str,
    *,
    reason: str,
    policy_id: int | None = None,
) -> ObjectVersion:
    obj, version = objects.version_to_delete(session, object_id, version_id)
    store.delete_version(objects.object_bucket(session, obj).name, obj.key, version_id)
    objects.mark_deleted(version, reason=reason, policy_id=policy_id)
    session.commit()
    return version

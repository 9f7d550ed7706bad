"""Object tags' rows: an object's tags are its latest live version's (services.tags keeps
that S3 version's alike)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..errors import Conflict
from ..specs.objects import validate_tags
from .models import BackupObject, Bucket, ObjectVersion, Tag
from .objects import get_object, is_current
from .rows import get_row


def list_tags(session: Session, object_id: int) -> dict[str, str]:
    get_object(session, object_id)
    rows = session.execute(
        select(Tag.key, Tag.value).where(Tag.object_id == object_id, is_current()).order_by(Tag.key)
    )
    return {key: value for key, value in rows}


def _latest_version(session: Session, obj: BackupObject) -> ObjectVersion:
    version = session.scalar(
        select(ObjectVersion)
        .where(ObjectVersion.object_id == obj.id, ObjectVersion.deleted_at.is_(None))
        .order_by(ObjectVersion.id.desc())
        .limit(1)
    )
    if version is None:
        raise Conflict(f"object {obj.id} has no live version to tag", field="object_id")
    return version


def write_tags(session: Session, object_id: int, tags: dict[str, str]) -> tuple[str, str, str]:
    """Make `tags` the rows of the object's latest live version (locked, flushed); the
    bucket, key and S3 version id the store's tags are then set on."""
    validate_tags(tags)
    obj = get_row(
        session, BackupObject, object_id, what="backup object", field="object_id", lock=True
    )
    version = _latest_version(session, obj)
    session.execute(delete(Tag).where(Tag.version_id == version.id))
    session.add_all(
        Tag(object_id=object_id, version_id=version.id, key=k, value=v) for k, v in tags.items()
    )
    session.flush()
    bucket = session.get_one(Bucket, obj.bucket_id)
    return bucket.name, obj.key, version.version_id

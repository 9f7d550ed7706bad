"""Object tags: an object's tags are its latest live version's, kept in the catalog and
on that S3 version alike."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound
from ..storage import ObjectStore, validate_tags
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


def replace_tags(
    session: Session, store: ObjectStore, object_id: int, tags: dict[str, str]
) -> dict[str, str]:
    """Make `tags` the object's whole tag set: catalog first (locked), then S3, then commit."""
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
    store.set_tags(bucket.name, obj.key, version.version_id, tags)
    session.commit()
    return dict(sorted(tags.items()))


def merge_tags(
    session: Session, store: ObjectStore, object_id: int, tags: dict[str, str]
) -> dict[str, str]:
    current = list_tags(session, object_id)
    return replace_tags(session, store, object_id, {**current, **tags})


def delete_tag(session: Session, store: ObjectStore, object_id: int, key: str) -> dict[str, str]:
    current = list_tags(session, object_id)
    if key not in current:
        raise NotFound(f"object {object_id} has no tag {key!r}", field="key")
    del current[key]
    return replace_tags(session, store, object_id, current)

"""Object tags, kept in the catalog and on the object's latest S3 version alike: the rows
first (the object locked, so two writers queue), then S3, then the commit; a store that
refuses leaves the rows as they were."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..catalog.tags import list_tags, write_tags
from ..errors import NotFound
from ..storage import ObjectStore


def replace_tags(
    session: Session, store: ObjectStore, object_id: int, tags: dict[str, str]
) -> dict[str, str]:
    """Make `tags` the object's whole tag set."""
    bucket, key, version_id = write_tags(session, object_id, tags)
    store.set_tags(bucket, key, version_id, tags)
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

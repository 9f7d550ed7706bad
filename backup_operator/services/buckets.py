"""Buckets: a catalog row and a versioned bucket in the object store, made and removed
together. The row first (its unique name refuses a second bucket before the store is
touched), the store second, the commit last: a store that refuses leaves no row."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..catalog import buckets
from ..catalog.models import Bucket
from ..errors import Conflict, NotFound
from ..storage import ObjectStore


def create_bucket(
    session: Session,
    store: ObjectStore,
    *,
    name: str,
    object_lock: bool,
    namespace: str | None = None,
) -> Bucket:
    bucket = buckets.add_bucket(session, name=name, object_lock=object_lock, namespace=namespace)
    store.create_bucket(name, object_lock=object_lock)
    session.commit()
    return bucket


def bucket_named(
    session: Session,
    store: ObjectStore,
    name: str,
    *,
    create: bool,
    namespace: str | None = None,
) -> Bucket:
    """The bucket of this name; with `create`, made (versioned) if the catalog lacks it,
    also when other workers make it at the same moment. With `namespace` (a Kubernetes
    resource's), it must be that namespace's: one nobody has claimed becomes it."""
    found = buckets.find_bucket(session, name)
    if found is None:
        if not create:
            raise NotFound(f"bucket {name!r} is not in the catalog", field="bucket")
        try:
            found = create_bucket(session, store, name=name, object_lock=False, namespace=namespace)
        except (Conflict, IntegrityError):
            session.rollback()  # another worker made it first
            found = buckets.find_bucket(session, name)
            if found is None:  # made and removed again meanwhile: say what refused
                raise
    if namespace is None or found.namespace == namespace:
        return found
    buckets.claim_for_namespace(session, found, namespace)
    session.commit()
    return found


def delete_bucket(session: Session, store: ObjectStore, bucket_id: int, *, force: bool) -> None:
    """The rows go first (locked, not yet committed), then the bucket in the store, then
    the commit: a store that refuses leaves the catalog as it was."""
    bucket = buckets.remove_bucket(session, bucket_id, force=force)
    store.remove_bucket(bucket.name, force=force)
    session.commit()

"""Buckets: a catalog row and a versioned bucket in the object store, created together."""

from __future__ import annotations

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, Invalid, NotFound
from ..specs.buckets import bucket_name_problem
from ..storage import ObjectStore
from .models import BackupJob, BackupObject, Bucket, File, Source
from .pages import Page, scalar_page
from .rows import get_row


def validate_bucket_name(name: str) -> None:
    if (problem := bucket_name_problem(name)) is not None:
        raise Invalid(problem, field="name")


def create_bucket(
    session: Session,
    store: ObjectStore,
    *,
    name: str,
    object_lock: bool,
    namespace: str | None = None,
) -> Bucket:
    validate_bucket_name(name)
    if session.scalar(select(Bucket.id).where(Bucket.name == name)) is not None:
        raise Conflict(f"bucket {name!r} already exists", field="name")
    bucket = Bucket(name=name, object_lock=object_lock, namespace=namespace)
    session.add(bucket)
    session.flush()  # the unique constraint speaks before the store is touched
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
    found = session.scalar(select(Bucket).where(Bucket.name == name))
    if found is None:
        if not create:
            raise NotFound(f"bucket {name!r} is not in the catalog", field="bucket")
        try:
            found = create_bucket(session, store, name=name, object_lock=False, namespace=namespace)
        except (Conflict, IntegrityError):
            session.rollback()  # another worker made it first
            found = session.scalars(select(Bucket).where(Bucket.name == name)).one()
    if namespace is None or found.namespace == namespace:
        return found
    # One statement: of two namespaces claiming it at once, one wins.
    session.execute(
        update(Bucket)
        .where(Bucket.id == found.id, Bucket.namespace.is_(None))
        .values(namespace=namespace)
    )
    session.commit()
    session.refresh(found)
    if found.namespace != namespace:
        raise Conflict(
            f"bucket {name!r} belongs to namespace {found.namespace!r}; a namespace's "
            "resources may use only its own buckets",
            field="bucket",
        )
    return found


def get_bucket(session: Session, bucket_id: int) -> Bucket:
    return get_row(session, Bucket, bucket_id, what="bucket", field="bucket_id")


def list_buckets(session: Session, *, after: int | None, limit: int) -> Page[Bucket]:
    return scalar_page(session, select(Bucket), Bucket.id, after=after, limit=limit)


def delete_bucket(session: Session, store: ObjectStore, bucket_id: int, *, force: bool) -> None:
    bucket = get_row(session, Bucket, bucket_id, what="bucket", field="bucket_id", lock=True)
    in_use = session.scalar(
        select(
            exists().where(BackupObject.bucket_id == bucket_id)
            | exists().where(BackupJob.bucket_id == bucket_id)
        )
    )
    if in_use and not force:
        raise Conflict(
            f"bucket {bucket.name!r} holds backup objects or jobs; delete with force=true to "
            "remove them, and every version in the object store, too",
            field="force",
        )
    session.execute(delete(File).where(File.bucket_id == bucket_id))
    session.execute(delete(BackupJob).where(BackupJob.bucket_id == bucket_id))
    session.execute(delete(Source).where(Source.bucket_id == bucket_id))
    session.execute(delete(BackupObject).where(BackupObject.bucket_id == bucket_id))
    session.delete(bucket)
    session.flush()
    store.remove_bucket(bucket.name, force=force)
    session.commit()

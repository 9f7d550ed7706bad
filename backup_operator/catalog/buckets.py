"""Buckets' rows (the versioned buckets in the store are services.buckets' to make)."""

from __future__ import annotations

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from ..errors import Conflict, Invalid
from ..specs.buckets import bucket_name_problem
from .models import BackupJob, BackupObject, Bucket, File, Source
from .pages import Page, scalar_page
from .rows import get_row


def validate_bucket_name(name: str) -> None:
    if (problem := bucket_name_problem(name)) is not None:
        raise Invalid(problem, field="name")


def add_bucket(
    session: Session, *, name: str, object_lock: bool, namespace: str | None = None
) -> Bucket:
    """The bucket's row, flushed: the unique name speaks before the store is touched."""
    validate_bucket_name(name)
    if session.scalar(select(Bucket.id).where(Bucket.name == name)) is not None:
        raise Conflict(f"bucket {name!r} already exists", field="name")
    bucket = Bucket(name=name, object_lock=object_lock, namespace=namespace)
    session.add(bucket)
    session.flush()
    return bucket


def find_bucket(session: Session, name: str) -> Bucket | None:
    return session.scalar(select(Bucket).where(Bucket.name == name))


def get_bucket(session: Session, bucket_id: int) -> Bucket:
    return get_row(session, Bucket, bucket_id, what="bucket", field="bucket_id")


def list_buckets(session: Session, *, after: int | None, limit: int) -> Page[Bucket]:
    return scalar_page(session, select(Bucket), Bucket.id, after=after, limit=limit)


def claim_for_namespace(session: Session, bucket: Bucket, namespace: str) -> None:
    """Make a bucket nobody has claimed `namespace`'s; Conflict if another has it. One
    statement: of two namespaces claiming it at once, one wins."""
    session.execute(
        update(Bucket)
        .where(Bucket.id == bucket.id, Bucket.namespace.is_(None))
        .values(namespace=namespace)
    )
    session.flush()
    session.refresh(bucket)
    if bucket.namespace != namespace:
        raise Conflict(
            f"bucket {bucket.name!r} belongs to namespace {bucket.namespace!r}; a namespace's "
            "resources may use only its own buckets",
            field="bucket",
        )


def remove_bucket(session: Session, bucket_id: int, *, force: bool) -> Bucket:
    """The bucket's rows and everything recorded in it, removed (flushed); without
    `force`, Conflict if it holds objects or jobs."""
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
    return bucket


def object_lock_bucket_names(session: Session) -> set[str]:
    return set(session.scalars(select(Bucket.name).where(Bucket.object_lock)))

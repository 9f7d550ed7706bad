"""Which policy governs which object: attached one by one, or by a scope (bucket, key
prefix, tags), and the objects of a job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from ...errors import NotFound
from .. import lineage
from ..arrays import in_ids
from ..jobs import get_job
from ..models import (
    BackupObject,
    Bucket,
    File,
    ObjectRetention,
    ObjectVersion,
    RetentionPolicy,
    RetentionTarget,
    Tag,
)
from ..objects import is_current
from ..pages import Page, scalar_page
from .policies import get_policy


def attach(session: Session, policy_id: int, object_ids: list[int]) -> int:
    get_policy(session, policy_id)
    known = set(session.scalars(select(BackupObject.id).where(in_ids(BackupObject.id, object_ids))))
    missing = sorted(set(object_ids) - known)
    if missing:
        raise NotFound(f"backup objects not found: {missing[:20]}", field="object_ids")
    if not object_ids:
        return 0
    attached = session.scalars(
        text("""
            INSERT INTO object_retention (object_id, policy_id)
            SELECT unnest(CAST(:ids AS bigint[])), :policy
            ON CONFLICT DO NOTHING
            RETURNING object_id
        """),
        {"ids": sorted(known), "policy": policy_id},
    ).all()
    session.flush()
    return len(attached)


def govern_job(session: Session, policy_name: str, job_id: int) -> int:
    """Attach the objects a job stored (a duplicate's through its canonical file) to the
    policy of this name; answer how many were newly attached."""
    policy_id = session.scalar(
        select(RetentionPolicy.id).where(RetentionPolicy.name == policy_name)
    )
    if policy_id is None:
        raise NotFound(f"retention policy {policy_name!r} not found", field="retentionPolicyRef")
    canonical = aliased(File)
    stored = (
        select(ObjectVersion.object_id, literal(policy_id))
        .distinct()
        .select_from(File)
        .outerjoin(canonical, canonical.id == File.canonical_file_id)
        .join(
            ObjectVersion,
            ObjectVersion.id == func.coalesce(canonical.object_version_id, File.object_version_id),
        )
        .where(lineage.in_tree(session, get_job(session, job_id)))
    )
    attached = session.scalars(
        insert(ObjectRetention)
        .from_select(["object_id", "policy_id"], stored)
        .on_conflict_do_nothing()
        .returning(ObjectRetention.object_id)
    ).all()
    session.flush()
    return len(attached)


def detach(session: Session, policy_id: int, object_ids: list[int]) -> int:
    get_policy(session, policy_id)
    result = session.execute(
        delete(ObjectRetention).where(
            ObjectRetention.policy_id == policy_id, in_ids(ObjectRetention.object_id, object_ids)
        )
    )
    session.flush()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def governed_objects(
    session: Session, policy_id: int, *, after: int | None, limit: int
) -> Page[BackupObject]:
    get_policy(session, policy_id)
    query = (
        select(BackupObject)
        .join(ObjectRetention, ObjectRetention.object_id == BackupObject.id)
        .where(ObjectRetention.policy_id == policy_id)
    )
    return scalar_page(session, query, BackupObject.id, after=after, limit=limit)


def has_scope(policy: RetentionPolicy) -> bool:
    return bool(policy.bucket_id or policy.key_prefix or policy.match_tags)


def governed_ids(policy: RetentionPolicy) -> Any:
    """The objects a versions policy governs: those attached to it, and those in its
    scope (bucket, key prefix, all the tags)."""
    # Packs hold many files' contents: they go with the last file that references them
    # (jobs policies), never by a versions policy's count or age.
    packs = select(BackupObject.id).where(BackupObject.is_pack)
    attached = select(ObjectRetention.object_id).where(
        ObjectRetention.policy_id == policy.id, ObjectRetention.object_id.not_in(packs)
    )
    if not has_scope(policy):
        return attached
    scoped = select(BackupObject.id).where(~BackupObject.is_pack)
    if policy.namespace is not None:  # a tenant's policy: its namespace's buckets only
        owned = select(Bucket.id).where(Bucket.namespace == policy.namespace)
        scoped = scoped.where(BackupObject.bucket_id.in_(owned))
    if policy.bucket_id is not None:
        scoped = scoped.where(BackupObject.bucket_id == policy.bucket_id)
    if policy.key_prefix:
        scoped = scoped.where(BackupObject.key.startswith(policy.key_prefix, autoescape=True))
    for key, value in (policy.match_tags or {}).items():
        scoped = scoped.where(
            select(Tag.id)
            .where(
                Tag.object_id == BackupObject.id,
                Tag.key == key,
                Tag.value == str(value),
                is_current(),
            )
            .exists()
        )
    return attached.union(scoped)


def record_governed(session: Session, policy: RetentionPolicy) -> None:
    """Record in object_retention which objects the policy's scope governs now."""
    if has_scope(policy) and policy.target is RetentionTarget.VERSIONS:
        session.execute(
            insert(ObjectRetention)
            .from_select(
                ["object_id", "policy_id"],
                select(governed_ids(policy).subquery().c[0], literal(policy.id)),
            )
            .on_conflict_do_nothing()
        )

"""A policy's plan: what a run would keep and delete, and why (a dry run is a plan shown)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from ...forget import Duration, Policy
from ...retention import Rules, decide, verdicts
from .. import lineage
from ..arrays import in_ids
from ..files import versions_of_duplicates
from ..models import (
    BackupJob,
    BackupObject,
    Bucket,
    JobStatus,
    ObjectVersion,
    RetentionPolicy,
    RetentionTarget,
)
from ..raw import named_rows
from .governance import governed_ids
from .policies import get_policy


def rules_of(policy: RetentionPolicy) -> Rules:
    return Rules(
        keep_last=policy.keep_last,
        max_age_days=policy.max_age_days,
        forget=Policy.from_dict(policy.rules or {}),
        min_versions=policy.min_versions,
        max_age=Duration.parse(policy.max_age) if policy.max_age else None,
    )


# What a plan reads of each version: rows, not ORM objects (a plan may hold millions).
VERSION_COLUMNS = tuple(ObjectVersion.__table__.columns)


class PlannedVersion(NamedTuple):  # a tuple: plans hold millions
    object_id: int
    bucket: str
    key: str
    version: Any  # a row with ObjectVersion's columns, as planned (not refreshed after apply)
    keep: bool
    reasons: tuple[str, ...]


@dataclass
class Plan:
    policy_id: int
    evaluated_at: datetime
    versions: list[PlannedVersion] = field(default_factory=list)
    jobs: list[PlannedJob] = field(default_factory=list)

    @property
    def to_delete(self) -> list[PlannedVersion]:
        return [v for v in self.versions if not v.keep]

    @property
    def bytes_to_free(self) -> int:
        return sum(item.version.size for item in self.versions if not item.keep)

    @property
    def jobs_to_forget(self) -> list[int]:
        return [j.job_id for j in self.jobs if not j.keep]


@dataclass(frozen=True)
class PlannedJob:
    job_id: int
    completed_at: datetime
    keep: bool
    reasons: tuple[str, ...]


def plan(session: Session, policy_id: int, *, now: datetime | None = None) -> Plan:
    """The dry run. Target "versions": every live version of every governed object, kept
    or not, and why. Target "jobs": every completed job of the source, kept or forgotten
    and why, and the versions that only forgotten jobs reference (to be deleted)."""
    policy = get_policy(session, policy_id)
    rules = rules_of(policy)
    now = now or datetime.now(UTC)
    if policy.target is RetentionTarget.JOBS:
        return _plan_jobs(session, policy, rules, now)
    held = versions_of_duplicates().subquery()
    query = (
        select(
            *VERSION_COLUMNS,
            BackupObject.key,
            Bucket.name,
            held.c.object_version_id.is_not(None).label("holds_duplicates"),
        )
        .join(BackupObject, BackupObject.id == ObjectVersion.object_id)
        .join(Bucket, Bucket.id == BackupObject.bucket_id)
        .outerjoin(held, held.c.object_version_id == ObjectVersion.id)
        .where(BackupObject.id.in_(governed_ids(policy)), ObjectVersion.deleted_at.is_(None))
        # Newest first within each object, as the rules rank them.
        .order_by(ObjectVersion.object_id, ObjectVersion.created_at.desc(), ObjectVersion.id.desc())
    )
    result = Plan(policy_id=policy_id, evaluated_at=now)
    planned = result.versions.append
    for object_id, group in groupby(_fetch_rows(session, query), key=attrgetter("object_id")):
        rows = list(group)
        for row, (keep, reasons) in zip(
            rows, verdicts(rules, [row.created_at for row in rows], now), strict=True
        ):
            if not keep and row.holds_duplicates:
                keep, reasons = True, _HOLDS_DUPLICATES
            planned(PlannedVersion(object_id, row.name, row.key, row, keep, reasons))
    return result


_HOLDS_DUPLICATES = ("stored content of duplicate files: never deleted",)


def dry_run(session: Session, policy_id: int, *, now: datetime | None = None) -> Plan:
    """The plan, shown to someone: it counts as the dry run a policy may require."""
    result = plan(session, policy_id, now=now)
    get_policy(session, policy_id).dry_run_at = datetime.now(UTC)
    session.flush()
    return result


def _fetch_rows(session: Session, query: Select[Any]) -> list[Any]:
    """A plan may read millions of rows: named tuples straight from psycopg."""
    compiled = query.compile(dialect=session.get_bind().dialect)
    return named_rows(session, str(compiled), dict(compiled.params))


def _plan_jobs(session: Session, policy: RetentionPolicy, rules: Rules, now: datetime) -> Plan:
    jobs = session.execute(
        select(BackupJob.id, BackupJob.completed_at, BackupJob.status).where(
            BackupJob.bucket_id == policy.bucket_id,
            BackupJob.source_system == policy.source_system,
            BackupJob.status.in_([JobStatus.COMPLETED, JobStatus.PARTIALLY_FAILED]),
            BackupJob.forgotten_at.is_(None),
        )
    ).all()
    when = {job_id: completed_at or now for job_id, completed_at, _ in jobs}
    # The newest N successful ones stay whatever the rules say (partial ones do not count).
    successful = sorted(
        ((when[job_id], job_id) for job_id, _, status in jobs if status is JobStatus.COMPLETED),
        reverse=True,
    )[: policy.keep_min_successful or 0]
    floor = {job_id: rank for rank, (_, job_id) in enumerate(successful, 1)}
    result = Plan(policy_id=policy.id, evaluated_at=now)
    for decision in decide(rules, list(when.items()), now):
        job_id = decision.version_id  # decide() ranks any points; here, jobs
        keep, reasons = decision.keep, decision.reasons
        if job_id in floor:
            why = f"keep_min_successful {policy.keep_min_successful}: newest successful #{floor[job_id]}"
            reasons = (*reasons, why) if keep else (why,)
            keep = True
        result.jobs.append(PlannedJob(job_id, when[job_id], keep, reasons))
    for version, key, bucket in versions_only_referenced_by(session, result.jobs_to_forget):
        result.versions.append(
            PlannedVersion(
                version.object_id,
                bucket,
                key,
                version,
                False,
                ("referenced only by jobs this policy forgets",),
            )
        )
    return result


# Versions the doomed jobs' trees hold (a duplicate's through its canonical file) that no
# file state a job that stays sees references.
_ORPHANED_VERSIONS = text(
    f"""
    WITH doomed AS (
        SELECT id, source_id, lineage_seq FROM backup_jobs WHERE id = ANY(:doomed)
    ), {lineage.KEPT}, candidates AS (
        SELECT DISTINCT coalesce(c.object_version_id, f.object_version_id) AS version_id
        FROM doomed d
        JOIN files f ON f.source_id = d.source_id
                    AND (CASE WHEN d.lineage_seq IS NULL THEN f.job_id = d.id
                              ELSE f.first_seq <= d.lineage_seq
                                   AND (f.end_seq IS NULL OR f.end_seq > d.lineage_seq) END)
        LEFT JOIN files c ON c.id = f.canonical_file_id
        WHERE f.change <> 'deleted'
    )
    SELECT v.id
    FROM candidates x
    JOIN object_versions v ON v.id = x.version_id AND v.deleted_at IS NULL
    WHERE NOT EXISTS (
        SELECT 1 FROM files k
        WHERE k.object_version_id = v.id AND NOT k.is_duplicate AND {lineage.kept_sees("k")})
      AND NOT EXISTS (
        SELECT 1 FROM files k
        JOIN files s ON s.canonical_file_id = k.id AND s.is_duplicate AND s.change <> 'deleted'
        WHERE k.object_version_id = v.id AND NOT k.is_duplicate AND {lineage.kept_sees("s")})
"""
)


def versions_only_referenced_by(session: Session, doomed: list[int]) -> list[tuple[Any, str, str]]:
    if not doomed:
        return []
    ids = list(session.scalars(_ORPHANED_VERSIONS, {"doomed": doomed}))
    if not ids:
        return []
    rows = session.execute(
        select(*VERSION_COLUMNS, BackupObject.key, Bucket.name)
        .join(BackupObject, BackupObject.id == ObjectVersion.object_id)
        .join(Bucket, Bucket.id == BackupObject.bucket_id)
        .where(in_ids(ObjectVersion.id, ids))
        .order_by(ObjectVersion.id)
    ).all()
    return [(row, row.key, row.name) for row in rows]

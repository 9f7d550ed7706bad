"""What the web interface's first pages show: each source with its newest job, and a
source's recent history. Reads only, one statement each whatever the number of sources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import BackupJob, Bucket, JobStatus, Source
from .rows import get_row


@dataclass(frozen=True)
class SourceSummary:
    source: Source
    bucket: str
    jobs: int
    newest: BackupJob | None  # the newest job, whatever its outcome
    last_completed: BackupJob | None  # the newest one that completed (maybe partly)


def source_summaries(session: Session, *, bucket_id: int | None = None) -> list[SourceSummary]:
    """Every source (of one bucket, or all), by bucket name and source."""
    counts = (
        select(
            BackupJob.source_id, func.count().label("jobs"), func.max(BackupJob.id).label("newest")
        )
        .group_by(BackupJob.source_id)
        .subquery()
    )
    completed = (
        select(BackupJob.source_id, func.max(BackupJob.id).label("completed"))
        .where(BackupJob.status.in_([JobStatus.COMPLETED, JobStatus.PARTIALLY_FAILED]))
        .group_by(BackupJob.source_id)
        .subquery()
    )
    query = (
        select(Source, Bucket.name, counts.c.jobs, counts.c.newest, completed.c.completed)
        .join(Bucket, Bucket.id == Source.bucket_id)
        .outerjoin(counts, counts.c.source_id == Source.id)
        .outerjoin(completed, completed.c.source_id == Source.id)
        .order_by(Bucket.name, Source.source_system, Source.key_prefix, Source.id)
    )
    if bucket_id is not None:
        query = query.where(Source.bucket_id == bucket_id)
    rows = session.execute(query).all()
    wanted = {job_id for row in rows for job_id in row[3:] if job_id is not None}
    jobs = {
        job.id: job for job in session.scalars(select(BackupJob).where(BackupJob.id.in_(wanted)))
    }
    return [
        SourceSummary(
            source, bucket, count or 0, jobs.get(newest or 0), jobs.get(last_completed or 0)
        )
        for source, bucket, count, newest, last_completed in rows
    ]


def get_source(session: Session, source_id: int) -> Source:
    return get_row(session, Source, source_id, what="source", field="source_id")


def source_history(
    session: Session,
    source_id: int,
    *,
    status: JobStatus | None = None,
    before: int | None = None,
    limit: int,
) -> Sequence[BackupJob]:
    """A source's jobs, newest first (keyset: those older than job `before`)."""
    query = select(BackupJob).where(BackupJob.source_id == source_id)
    if status is not None:
        query = query.where(BackupJob.status == status)
    if before is not None:
        query = query.where(BackupJob.id < before)
    return session.scalars(query.order_by(BackupJob.id.desc()).limit(limit)).all()

"""Backup jobs and their lifecycle: pending -> running -> completed / failed / cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, overload

from sqlalchemy import ColumnElement, and_, delete, false, func, insert, select, union_all, update
from sqlalchemy.orm import Session

from ..errors import Conflict
from ..specs.objects import validate_tags
from . import lineage
from .buckets import get_bucket
from .models import BackupJob, JobFailure, JobStatus, Runner, SourceType
from .pages import Page, scalar_page
from .rows import get_row
from .stats import JobStats

ALLOWED_TRANSITIONS: dict[JobStatus, set[JobStatus]] = {
    JobStatus.PENDING: {JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED},
    JobStatus.RUNNING: {
        JobStatus.COMPLETED,
        JobStatus.PARTIALLY_FAILED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.PENDING,
    },
    JobStatus.COMPLETED: set(),
    JobStatus.PARTIALLY_FAILED: set(),
    JobStatus.FAILED: set(),
    JobStatus.CANCELLED: set(),
}


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """Naive times (as the original API accepted them) are taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def normalise_prefix(prefix: str) -> str:
    return prefix.strip("/")


def create_job(
    session: Session,
    *,
    job_name: str,
    source_system: str,
    bucket_id: int,
    start_time: datetime | None = None,
    key_prefix: str = "",
    source_type: SourceType = SourceType.DIRECTORY,
    rehash: bool = False,
    runner: Runner = Runner.SCHEDULER,
    external_uid: str | None = None,
    namespace: str | None = None,
    schedule: str | None = None,
    active_deadline_seconds: int | None = None,
    tags: dict[str, str] | None = None,
    pack_threshold: int | None = None,
) -> BackupJob:
    """A new pending job. With `external_uid` (a Kubernetes resource's uid) creating it
    again answers the job already recorded, so that a resource is registered once."""
    if external_uid is not None:
        existing = session.scalar(select(BackupJob).where(BackupJob.external_uid == external_uid))
        if existing is not None:
            return existing
    get_bucket(session, bucket_id)
    validate_tags(tags or {})
    job = BackupJob(
        job_name=job_name,
        source_id=lineage.source_id_for(
            session,
            bucket_id=bucket_id,
            source_system=source_system,
            key_prefix=normalise_prefix(key_prefix),
            source_type=source_type,
        ),
        source_system=source_system,
        bucket_id=bucket_id,
        start_time=as_utc(start_time),
        key_prefix=normalise_prefix(key_prefix),
        source_type=source_type,
        rehash=rehash,
        runner=runner,
        external_uid=external_uid,
        namespace=namespace,
        schedule=schedule,
        active_deadline_seconds=active_deadline_seconds,
        tags=dict(tags or {}),
        pack_threshold=pack_threshold,
    )
    session.add(job)
    session.flush()
    return job


def reschedule(
    session: Session, job_id: int, *, start_time: datetime | None, key_prefix: str
) -> BackupJob:
    """Change when and where a job that has not started yet will run."""
    job = get_job(session, job_id, for_update=True)
    if job.status is not JobStatus.PENDING or job.started_at is not None:
        raise Conflict(
            f"job {job_id} has started ({job.status.value}): jobs are immutable records",
            field="spec",
        )
    job.start_time = as_utc(start_time)
    job.key_prefix = normalise_prefix(key_prefix)
    job.source_id = lineage.source_id_for(
        session,
        bucket_id=job.bucket_id,
        source_system=job.source_system,
        key_prefix=job.key_prefix,
        source_type=job.source_type,
    )
    session.flush()
    return job


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> BackupJob:
    return get_row(session, BackupJob, job_id, what="backup job", field="job_id", lock=for_update)


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    bucket_id: int | None = None,
    after: int | None,
    limit: int,
) -> Page[BackupJob]:
    query = select(BackupJob)
    if status is not None:
        query = query.where(BackupJob.status == status)
    if bucket_id is not None:
        query = query.where(BackupJob.bucket_id == bucket_id)
    return scalar_page(session, query, BackupJob.id, after=after, limit=limit)


def set_status(
    session: Session,
    job_id: int,
    status: JobStatus,
    *,
    error: str | None = None,
) -> BackupJob:
    job = get_job(session, job_id, for_update=True)
    if status != job.status and status not in ALLOWED_TRANSITIONS[job.status]:
        raise Conflict(
            f"job {job_id} is {job.status.value}; it cannot become {status.value}", field="status"
        )
    now = datetime.now(UTC)
    job.status = status
    if status is JobStatus.RUNNING:
        job.started_at = job.started_at or now
        job.heartbeat_at = now
    if status.finished:
        job.completed_at = now
    if status is JobStatus.PENDING:
        job.worker_id = None
    if error is not None:
        job.error = error
    if status is JobStatus.COMPLETED:
        lineage.join(session, job)
    session.flush()
    return job


def cancel_job(session: Session, job_id: int) -> BackupJob:
    return set_status(session, job_id, JobStatus.CANCELLED)


# --- the scheduler's side: claims, heartbeats and endings -------------------------------


def claim_due_job(
    session: Session, *, worker_id: str, runner: Runner = Runner.SCHEDULER
) -> BackupJob | None:
    """Take one pending job of this runner whose start time has come. Row locks with
    SKIP LOCKED make the claim exclusive across replicas without waiting on each other."""
    due = (
        select(BackupJob.id)
        .where(BackupJob.status == JobStatus.PENDING, BackupJob.runner == runner)
        .where((BackupJob.start_time.is_(None)) | (BackupJob.start_time <= func.now()))
        .order_by(BackupJob.start_time.asc().nulls_first(), BackupJob.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    job_id = session.scalar(
        update(BackupJob)
        .where(BackupJob.id == due)
        .values(
            status=JobStatus.RUNNING,
            worker_id=worker_id,
            started_at=func.coalesce(BackupJob.started_at, func.now()),
            heartbeat_at=func.now(),
            attempts=BackupJob.attempts + 1,
        )
        .returning(BackupJob.id)
    )
    session.flush()
    return None if job_id is None else get_job(session, job_id)


def claim_job(session: Session, job_id: int, *, worker_id: str) -> BackupJob:
    """Take this job to run now: a pending one, or a running one whose worker died
    (a console `backup --job` resuming it)."""
    job = get_job(session, job_id, for_update=True)
    if job.status is JobStatus.RUNNING and job.worker_id is not None:
        raise Conflict(f"job {job_id} is running on {job.worker_id}", field="job_id")
    if job.status is not JobStatus.PENDING and job.status is not JobStatus.RUNNING:
        raise Conflict(f"job {job_id} is {job.status.value}", field="job_id")
    job.status = JobStatus.RUNNING
    job.worker_id = worker_id
    job.started_at = job.started_at or datetime.now(UTC)
    job.heartbeat_at = datetime.now(UTC)
    job.attempts += 1
    session.flush()
    return job


def _running_for(job_id: int, worker_id: str) -> ColumnElement[bool]:
    """The job, while it runs for this worker (not cancelled, not taken over)."""
    return and_(
        BackupJob.id == job_id,
        BackupJob.worker_id == worker_id,
        BackupJob.status == JobStatus.RUNNING,
    )


def heartbeat(session: Session, job_id: int, *, worker_id: str) -> bool:
    """Answers False when the job is no longer ours to run (cancelled, reclaimed, or past
    its deadline: then it fails here, however busy its worker is)."""
    still_ours = session.scalar(
        update(BackupJob)
        .where(_running_for(job_id, worker_id), func.coalesce(_overdue(), false()).is_(false()))
        .values(heartbeat_at=func.now())
        .returning(BackupJob.id)
    )
    if still_ours is None:
        fail_overdue_jobs(session, job_id=job_id)
    session.flush()
    return still_ours is not None


def finish_job(
    session: Session,
    job_id: int,
    *,
    worker_id: str,
    status: JobStatus,
    stats: JobStats | None = None,
    error: str | None = None,
) -> bool:
    """End a running job we own; a job cancelled meanwhile stays cancelled."""
    values: dict[str, Any] = {"status": status, "completed_at": func.now(), "error": error}
    if stats is not None:
        values["stats"] = stats
    ended = session.scalar(
        update(BackupJob)
        .where(_running_for(job_id, worker_id))
        .values(**values)
        .returning(BackupJob.id)
    )
    if ended is not None and status is JobStatus.COMPLETED:
        lineage.join(session, get_job(session, job_id))  # in the same transaction
    session.flush()
    return ended is not None


def outcome(stats: JobStats) -> JobStatus:
    """How a run that reached its end ended: some files not stored is not success."""
    return JobStatus.PARTIALLY_FAILED if stats.failed_files else JobStatus.COMPLETED


def save_stats(session: Session, job_id: int, stats: JobStats) -> None:
    """A running job's counters so far (its checkpoint)."""
    session.execute(update(BackupJob).where(BackupJob.id == job_id).values(stats=stats))


def record_failures(
    session: Session, job_id: int, failures: list[tuple[str, str, str | None]]
) -> None:
    """Files (path, kind, reason) this job could not back up."""
    if failures:
        session.execute(
            insert(JobFailure),
            [{"job_id": job_id, "path": p, "kind": k, "reason": r} for p, k, r in failures],
        )


def forget_failures(session: Session, job_id: int) -> None:
    """A job run again (resumed) tries its failed files again: their failures go."""
    session.execute(delete(JobFailure).where(JobFailure.job_id == job_id))


def list_failures(
    session: Session, job_id: int, *, after: int | None, limit: int
) -> Page[JobFailure]:
    get_job(session, job_id)
    query = select(JobFailure).where(JobFailure.job_id == job_id)
    return scalar_page(session, query, JobFailure.id, after=after, limit=limit)


def release_job(session: Session, job_id: int, *, worker_id: str) -> bool:
    """A worker shutting down hands its running job back, to be resumed at once."""
    released = session.scalar(
        update(BackupJob)
        .where(_running_for(job_id, worker_id))
        .values(
            status=JobStatus.PENDING,
            worker_id=None,
            error=f"Interrupted: worker {worker_id} stopped; the job is resumed",
        )
        .returning(BackupJob.id)
    )
    session.flush()
    return released is not None


def fail_overdue_jobs(session: Session, *, job_id: int | None = None) -> list[int]:
    """Jobs started (running, or waiting to be resumed) longer ago than their
    activeDeadlineSeconds fail, saying so; a worker still on one stops at its next
    heartbeat."""
    overdue = (
        update(BackupJob)
        .where(BackupJob.status.in_([JobStatus.RUNNING, JobStatus.PENDING]), _overdue())
        .values(
            **_failing(
                func.concat(
                    "DeadlineExceeded: unfinished ",
                    BackupJob.active_deadline_seconds,
                    "s after it started (activeDeadlineSeconds); stopped",
                )
            )
        )
        .returning(BackupJob.id)
    )
    if job_id is not None:
        overdue = overdue.where(BackupJob.id == job_id)
    return list(session.scalars(overdue).all())


def seconds_to_next_event(
    session: Session, *, runner: Runner, heartbeat_timeout: timedelta
) -> float | None:
    """Seconds until the catalog next needs a scheduler of `runner` without anyone
    telling it (None: never): a pending job's start time, a running job's heartbeat
    going stale, a deadline passing. Jobs made to start now come with a wake-up."""
    deadline = func.make_interval(0, 0, 0, 0, 0, 0, BackupJob.active_deadline_seconds)
    unfinished = BackupJob.status.in_([JobStatus.RUNNING, JobStatus.PENDING])
    events = union_all(
        select(func.min(BackupJob.start_time).label("at")).where(
            BackupJob.status == JobStatus.PENDING, BackupJob.runner == runner
        ),
        select(func.min(BackupJob.heartbeat_at + heartbeat_timeout)).where(
            BackupJob.status == JobStatus.RUNNING
        ),
        select(func.min(BackupJob.started_at + deadline)).where(unfinished),
    ).subquery()
    seconds = session.scalar(select(func.extract("epoch", func.min(events.c.at) - func.now())))
    return None if seconds is None else max(0.0, float(seconds))


def _overdue() -> Any:
    """Started longer ago than its activeDeadlineSeconds (NULL without a deadline)."""
    deadline = func.make_interval(0, 0, 0, 0, 0, 0, BackupJob.active_deadline_seconds)
    return BackupJob.started_at + deadline < func.now()


def _failing(error: Any) -> dict[str, Any]:
    """The values that end a job failed, with its reason."""
    return {
        "status": JobStatus.FAILED,
        "worker_id": None,
        "completed_at": func.now(),
        "error": error,
    }


class Released(NamedTuple):
    resumed: list[int]
    failed: list[int]


def release_stale_jobs(
    session: Session, *, timeout: timedelta, max_attempts: int | None = None
) -> Released:
    """Jobs past their deadline fail; running jobs whose worker stopped heartbeating go
    back to pending, to be resumed, or fail, saying why, once they had `max_attempts`."""
    failed = fail_overdue_jobs(session)
    stale = (BackupJob.status == JobStatus.RUNNING) & (
        BackupJob.heartbeat_at < func.now() - timeout
    )
    silent = ("WorkerLost: no heartbeat for ", int(timeout.total_seconds()), "s from worker ")
    if max_attempts is not None:
        given_up = f"; given up after {max_attempts} attempts"
        failed += session.scalars(
            update(BackupJob)
            .where(stale, BackupJob.attempts >= max_attempts)
            .values(**_failing(func.concat(*silent, BackupJob.worker_id, given_up)))
            .returning(BackupJob.id)
        ).all()
    of_max = "" if max_attempts is None else f" of {max_attempts}"
    ids = session.scalars(
        update(BackupJob)
        .where(stale)
        .values(
            status=JobStatus.PENDING,
            worker_id=None,
            error=func.concat(
                *silent,
                BackupJob.worker_id,
                "; resumed as attempt ",
                BackupJob.attempts + 1,
                of_max,
            ),
        )
        .returning(BackupJob.id)
    ).all()
    session.flush()
    return Released(list(ids), failed)

"""A real run's rows: the run itself, the versions it deleted (with their reasons), the
files whose content it removed, the jobs it forgot. services.retention drives the run
against the store; nothing here touches it."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from ..arrays import in_ids
from ..models import BackupJob, File, ObjectVersion, RetentionRun
from .planning import PlannedVersion


def start_run(
    session: Session, *, policy_id: int | None, policy_name: str, actor: str
) -> RetentionRun:
    run = RetentionRun(policy_id=policy_id, policy_name=policy_name, actor=actor)
    session.add(run)
    session.flush()
    return run


def record_error(session: Session, run_id: int, error: BaseException) -> None:
    session.execute(
        update(RetentionRun)
        .where(RetentionRun.id == run_id)
        .values(error=f"{type(error).__name__}: {error}")
    )


def mark_deleted(
    session: Session, items: list[PlannedVersion], *, policy_id: int | None, run_id: int
) -> None:
    """One UPDATE per distinct reason (a policy has few), whatever the number of versions."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for item in items:
        by_reason["; ".join(item.reasons)].append(item.version.id)
    for reason, ids in by_reason.items():
        session.execute(
            update(ObjectVersion)
            .where(in_ids(ObjectVersion.id, ids))
            .values(
                deleted_at=func.now(),
                deleted_by_policy_id=policy_id,
                deleted_by_run_id=run_id,
                deletion_reason=reason,
            )
            .execution_options(synchronize_session=False)
        )


def unlink_contents(session: Session, version_rows: list[int]) -> None:
    """Their content is gone: no file may link to it, and the next backup of the same
    content uploads it again instead of becoming a duplicate of nothing."""
    session.execute(
        update(File)
        .where(in_ids(File.object_version_id, version_rows))
        .values(object_version_id=None)
    )


def forget_jobs(session: Session, job_ids: list[int], *, run_id: int) -> None:
    session.execute(
        update(BackupJob)
        .where(in_ids(BackupJob.id, job_ids))
        .values(forgotten_at=func.now(), forgotten_by_run_id=run_id)
    )


def finish_run(
    session: Session,
    run: RetentionRun,
    *,
    deleted: int,
    locked: int,
    bytes_freed: int,
    refused: dict[str, str],
    kept: int,
    forgotten_jobs: int | None,
) -> None:
    run.deleted, run.locked, run.bytes_freed, run.refused = deleted, locked, bytes_freed, refused
    run.kept = kept
    if forgotten_jobs is not None:
        run.forgotten_jobs = forgotten_jobs
    run.finished_at = func.now()
    session.flush()

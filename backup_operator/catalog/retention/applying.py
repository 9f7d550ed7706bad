"""A real run: the planned versions deleted from the store, then from the catalog, jobs
forgotten, packs pruned, all audited."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ...deadline import Deadline, DeadlineExceeded
from ...errors import Conflict, Unavailable
from ...retry import RetriesExhausted
from ...storage import DELETE_BATCH, ObjectStore
from ..arrays import in_ids
from ..jobs import get_job
from ..locks import lock_bucket_for_retention
from ..models import BackupJob, Bucket, File, ObjectVersion, RetentionRun, RetentionTarget
from ..prune import DEFAULT_WASTE, PruneResult, prune_packs
from .governance import record_governed
from .planning import Plan, PlannedJob, PlannedVersion, plan, versions_only_referenced_by
from .policies import get_policy


@dataclass
class ApplyResult:
    plan: Plan
    run: RetentionRun
    deleted: list[PlannedVersion]
    locked: dict[str, str]  # S3 version id -> the lock that protects it (never attempted)
    refused: dict[str, str]  # S3 version id -> the store's reason for refusing the delete
    pruned: PruneResult | None = None  # the packs rewritten after it (target jobs)

    @property
    def bytes_freed(self) -> int:
        return sum(item.version.size for item in self.deleted)


def apply(
    session: Session,
    store: ObjectStore,
    policy_id: int,
    *,
    actor: str,
    deadline: Deadline | None = None,
    prune_waste: float = DEFAULT_WASTE,
) -> ApplyResult:
    """Delete what the plan says, in the store by version id (batched), then in the
    catalog; versions under object lock or legal hold are reported, never attempted.
    For target "jobs" the evaluation and the deletes happen under the bucket's retention
    lock, in one transaction, and the forgotten jobs are marked; then the bucket's packs
    mostly unreferenced (`prune_waste`) are rewritten. The run is recorded as an audit
    entry, finished or (if interrupted) not, with what stopped it."""
    policy = get_policy(session, policy_id)
    if policy.require_dry_run and (
        policy.dry_run_at is None or policy.dry_run_at < policy.changed_at
    ):
        raise Conflict(
            "this policy requires a dry run after its last change before a real run",
            field="require_dry_run",
        )
    run = RetentionRun(policy_id=policy_id, policy_name=policy.name, actor=actor)
    session.add(run)
    session.commit()
    jobs_mode = policy.target is RetentionTarget.JOBS
    if jobs_mode and policy.bucket_id is not None:
        lock_bucket_for_retention(session, policy.bucket_id)
    record_governed(session, policy)
    current = plan(session, policy_id)
    result = _execute(session, store, run, current, jobs_mode=jobs_mode, deadline=deadline)
    if jobs_mode and policy.bucket_id is not None:
        bucket = session.get_one(Bucket, policy.bucket_id)
        pruned = prune_packs(
            session, store, bucket.id, bucket.name, waste=prune_waste, run_id=result.run.id
        )
        result.pruned = pruned
    return result


def forget_job(
    session: Session,
    store: ObjectStore,
    job_id: int,
    *,
    actor: str,
    deadline: Deadline | None = None,
) -> ApplyResult:
    """Forget one finished job and delete the versions no other job references (its
    resource was deleted with the request to take its objects along). Audited as a run
    without a policy."""
    job = get_job(session, job_id)
    run = RetentionRun(policy_id=None, policy_name=f"deletion of job {job_id}", actor=actor)
    session.add(run)
    session.commit()
    lock_bucket_for_retention(session, job.bucket_id)
    current = Plan(policy_id=0, evaluated_at=datetime.now(UTC))
    current.jobs.append(
        PlannedJob(job.id, job.completed_at or current.evaluated_at, False, (actor,))
    )
    for version, key, bucket in versions_only_referenced_by(session, [job.id]):
        current.versions.append(
            PlannedVersion(version.object_id, bucket, key, version, False, ("job deleted",))
        )
    return _execute(session, store, run, current, jobs_mode=True, deadline=deadline)


def _execute(
    session: Session,
    store: ObjectStore,
    run: RetentionRun,
    current: Plan,
    *,
    jobs_mode: bool,
    deadline: Deadline | None,
) -> ApplyResult:
    """The run's deletions; if an outage or the deadline stops it, the run records why
    (what was deleted before stays recorded as deleted: the catalog matches the store)."""
    run_id = run.id
    try:
        return _delete_planned(session, store, run, current, jobs_mode, deadline or Deadline(1e9))
    except (DeadlineExceeded, Unavailable, RetriesExhausted) as error:
        try:
            session.execute(
                update(RetentionRun)
                .where(RetentionRun.id == run_id)
                .values(error=f"{type(error).__name__}: {error}")
            )
            session.commit()
        except SQLAlchemyError:  # the database is what failed: nothing can be recorded
            session.rollback()
        raise


def _delete_planned(
    session: Session,
    store: ObjectStore,
    run: RetentionRun,
    current: Plan,
    jobs_mode: bool,
    deadline: Deadline,
) -> ApplyResult:
    lock_enabled = {b.name for b in session.scalars(select(Bucket).where(Bucket.object_lock))}
    by_bucket: dict[str, list[PlannedVersion]] = defaultdict(list)
    for item in current.to_delete:
        by_bucket[item.bucket].append(item)
    deleted: list[PlannedVersion] = []
    locked: dict[str, str] = {}
    refused: dict[str, str] = {}
    policy_id, run_id = run.policy_id, run.id
    for bucket, items in by_bucket.items():
        if bucket in lock_enabled:
            for item in items:
                deadline.step(f"reading the lock of {item.key} in bucket {bucket}")
                why = store.locked(bucket, item.key, item.version.version_id, current.evaluated_at)
                if why is not None:
                    locked[item.version.version_id] = why
            items = [i for i in items if i.version.version_id not in locked]
        for start in range(0, len(items), DELETE_BATCH):
            batch = items[start : start + DELETE_BATCH]
            deadline.step(f"deleting {len(batch)} versions from bucket {bucket}")
            refused_here = store.delete_versions(
                bucket, [(item.key, item.version.version_id) for item in batch]
            )
            refused.update(refused_here)
            done = [item for item in batch if item.version.version_id not in refused_here]
            _mark_deleted(session, done, policy_id=policy_id, run_id=run_id)
            if jobs_mode:
                # Their content is gone: no file may link to it, and the next backup of the
                # same content uploads it again instead of becoming a duplicate of nothing.
                session.execute(
                    update(File)
                    .where(in_ids(File.object_version_id, [i.version.id for i in done]))
                    .values(object_version_id=None)
                )
            else:
                session.commit()  # a later outage or deadline keeps what was done
            deleted += done
    if jobs_mode:
        forgotten = current.jobs_to_forget
        if locked or refused:
            forgotten = []  # keep the jobs restorable until every delete went through
        session.execute(
            update(BackupJob)
            .where(in_ids(BackupJob.id, forgotten))
            .values(forgotten_at=func.now(), forgotten_by_run_id=run.id)
        )
        run.forgotten_jobs = len(forgotten)
        run.kept = len(current.jobs) - len(current.jobs_to_forget)
    else:
        run.kept = len(current.versions) - len(current.to_delete)
    result = ApplyResult(current, run, deleted, locked, refused)
    run.deleted = len(deleted)
    run.locked = len(locked)
    run.bytes_freed = result.bytes_freed
    run.refused = refused
    run.finished_at = func.now()
    session.commit()
    return result


def _mark_deleted(
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

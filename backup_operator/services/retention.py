"""A real retention run: the planned versions deleted from the store (by version id,
batched), then marked deleted in the catalog; jobs forgotten, packs pruned, all audited.

The run's row is committed first, so an interrupted run is still audited. Versions
under object lock or legal hold are reported, never attempted. For a versions policy
each batch is committed after the store deleted it (a later outage or deadline keeps
what was done); for target "jobs" the evaluation and the deletes happen under the
bucket's retention lock, in one transaction, then the packs are pruned.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..catalog import buckets
from ..catalog.jobs import get_job
from ..catalog.locks import lock_bucket_for_retention
from ..catalog.models import RetentionRun, RetentionTarget
from ..catalog.prune import DEFAULT_WASTE, PruneResult
from ..catalog.retention import runs
from ..catalog.retention.governance import record_governed
from ..catalog.retention.planning import (
    Plan,
    PlannedJob,
    PlannedVersion,
    plan,
    versions_only_referenced_by,
)
from ..catalog.retention.policies import get_policy
from ..deadline import Deadline, DeadlineExceeded
from ..errors import Conflict, Unavailable
from ..retry import RetriesExhausted
from ..storage import DELETE_BATCH, ObjectStore
from .prune import prune_packs


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
    """Delete what the policy's plan says; for target "jobs", then rewrite the bucket's
    packs mostly unreferenced (`prune_waste`). The run is recorded as an audit entry,
    finished or (if interrupted) not, with what stopped it."""
    policy = get_policy(session, policy_id)
    if policy.require_dry_run and (
        policy.dry_run_at is None or policy.dry_run_at < policy.changed_at
    ):
        raise Conflict(
            "this policy requires a dry run after its last change before a real run",
            field="require_dry_run",
        )
    run = runs.start_run(session, policy_id=policy_id, policy_name=policy.name, actor=actor)
    session.commit()
    jobs_mode = policy.target is RetentionTarget.JOBS
    if jobs_mode and policy.bucket_id is not None:
        lock_bucket_for_retention(session, policy.bucket_id)
    record_governed(session, policy)
    current = plan(session, policy_id)
    result = _execute(session, store, run, current, jobs_mode=jobs_mode, deadline=deadline)
    if jobs_mode and policy.bucket_id is not None:
        bucket = buckets.get_bucket(session, policy.bucket_id)
        result.pruned = prune_packs(
            session, store, bucket.id, bucket.name, waste=prune_waste, run_id=result.run.id
        )
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
    run = runs.start_run(
        session, policy_id=None, policy_name=f"deletion of job {job_id}", actor=actor
    )
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
            runs.record_error(session, run_id, error)
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
    lock_enabled = buckets.object_lock_bucket_names(session)
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
            runs.mark_deleted(session, done, policy_id=policy_id, run_id=run_id)
            if jobs_mode:
                runs.unlink_contents(session, [i.version.id for i in done])
            else:
                session.commit()  # a later outage or deadline keeps what was done
            deleted += done
    forgotten: list[int] | None = None
    if jobs_mode:
        # Keep the jobs restorable until every delete went through.
        forgotten = [] if locked or refused else current.jobs_to_forget
        runs.forget_jobs(session, forgotten, run_id=run_id)
        kept = len(current.jobs) - len(current.jobs_to_forget)
    else:
        kept = len(current.versions) - len(current.to_delete)
    result = ApplyResult(current, run, deleted, locked, refused)
    runs.finish_run(
        session,
        run,
        deleted=len(deleted),
        locked=len(locked),
        bytes_freed=result.bytes_freed,
        refused=refused,
        kept=kept,
        forgotten_jobs=None if forgotten is None else len(forgotten),
    )
    session.commit()
    return result

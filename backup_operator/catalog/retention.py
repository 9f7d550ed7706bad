"""Retention policies in the catalog: which policy governs which object, dry runs, applies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, delete, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from ..deadline import Deadline, DeadlineExceeded
from ..errors import Conflict, Invalid, NotFound, Unavailable
from ..forget import Duration, Policy
from ..retention import Rules, decide, verdicts
from ..retry import RetriesExhausted
from ..specs.fields import check, parse
from ..specs.retention_policy import PolicySpec
from ..storage import DELETE_BATCH, Lock, ObjectStore
from . import lineage
from .arrays import in_ids
from .files import versions_of_duplicates
from .jobs import get_job
from .locks import lock_bucket_for_retention
from .models import (
    BackupJob,
    BackupObject,
    Bucket,
    File,
    JobStatus,
    LockMode,
    ObjectRetention,
    ObjectVersion,
    RetentionPolicy,
    RetentionRun,
    RetentionTarget,
    Tag,
)
from .objects import is_current
from .pages import Page, scalar_page
from .prune import DEFAULT_WASTE, PruneResult, prune_packs
from .raw import named_rows


def rules_of(policy: RetentionPolicy) -> Rules:
    return Rules(
        keep_last=policy.keep_last,
        max_age_days=policy.max_age_days,
        forget=Policy.from_dict(policy.rules or {}),
        min_versions=policy.min_versions,
        max_age=Duration.parse(policy.max_age) if policy.max_age else None,
    )


def _check_target(session: Session, spec: PolicySpec) -> None:
    """What a jobs policy needs, and a bucket that exists (the spec's own bounds are
    checked by `check`)."""
    if spec.bucket_id is not None and session.get(Bucket, spec.bucket_id) is None:
        raise NotFound(f"bucket {spec.bucket_id} not found", field="bucket_id")
    if spec.keep_min_successful is not None and spec.target is not RetentionTarget.JOBS:
        raise Invalid(
            "applies to a jobs policy (the successful backups of a source)",
            field="keep_min_successful",
        )
    if spec.target is not RetentionTarget.JOBS:
        return
    if spec.bucket_id is None:
        raise Invalid("a policy of jobs needs the bucket of its source", field="bucket_id")
    if not spec.source_system:
        raise Invalid("a policy of jobs needs its source", field="source_system")


def _check_lock(session: Session, spec: PolicySpec) -> None:
    if (spec.lock_mode is None) != (spec.lock_days is None):
        raise Invalid("lock_mode and lock_days go together", field="lock_days")
    if (spec.lock_mode or spec.legal_hold) and spec.bucket_id is not None:
        bucket = session.get(Bucket, spec.bucket_id)
        if bucket is not None and not bucket.object_lock:
            raise Invalid(
                f"bucket {bucket.name!r} was not created with object lock",
                field="lock_mode" if spec.lock_mode else "legal_hold",
            )


def _checked(session: Session, fields: Mapping[str, Any]) -> PolicySpec:
    spec = parse(PolicySpec, fields)
    check(spec)
    _check_target(session, spec)
    _check_lock(session, spec)
    return spec


def _refuse_taken(session: Session, name: str) -> None:
    if session.scalar(select(RetentionPolicy.id).where(RetentionPolicy.name == name)):
        raise Conflict(f"retention policy {name!r} already exists", field="name")


def create_policy(
    session: Session, *, name: str, namespace: str | None = None, **fields: Any
) -> RetentionPolicy:
    """A new policy; `fields` are PolicySpec's (a field it does not know is refused)."""
    spec = _checked(session, fields)
    _refuse_taken(session, name)
    policy = RetentionPolicy(name=name, namespace=namespace, **spec.model_dump())
    session.add(policy)
    session.commit()
    return policy


def get_policy(session: Session, policy_id: int) -> RetentionPolicy:
    policy = session.get(RetentionPolicy, policy_id)
    if policy is None:
        raise NotFound(f"retention policy {policy_id} not found", field="policy_id")
    return policy


def list_policies(session: Session, *, after: int | None, limit: int) -> Page[RetentionPolicy]:
    return scalar_page(
        session, select(RetentionPolicy), RetentionPolicy.id, after=after, limit=limit
    )


def update_policy(session: Session, policy_id: int, **changes: Any) -> RetentionPolicy:
    """Change the given fields (PolicySpec's, and name or namespace); the rest stay."""
    policy = get_policy(session, policy_id)
    if "rules" in changes and changes["rules"] is None:
        changes["rules"] = {}
    name = changes.pop("name", policy.name)
    namespace = changes.pop("namespace", policy.namespace)
    current = {field: getattr(policy, field) for field in PolicySpec.model_fields}
    spec = _checked(session, {**current, **changes})
    if name != policy.name:
        _refuse_taken(session, name)
    values = {"name": name, "namespace": namespace, **spec.model_dump()}
    if any(getattr(policy, attribute) != value for attribute, value in values.items()):
        policy.changed_at = datetime.now(UTC)  # a changed policy needs a new dry run
    for attribute, value in values.items():
        setattr(policy, attribute, value)
    session.commit()
    return policy


def put_policy(session: Session, *, name: str, **fields: Any) -> RetentionPolicy:
    """Create the policy of this name, or make the existing one say exactly `fields`
    (a Kubernetes resource reconciled into the catalog): a field not given takes the
    spec's default, but the description, which a resource does not have."""
    existing = session.scalar(select(RetentionPolicy.id).where(RetentionPolicy.name == name))
    if existing is None:
        return create_policy(session, name=name, **fields)
    defaults = PolicySpec().model_dump(exclude={"description"})
    return update_policy(session, existing, **{**defaults, **fields})


def delete_policy(session: Session, policy_id: int) -> None:
    session.delete(get_policy(session, policy_id))
    session.commit()


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
    session.commit()
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
    session.commit()
    return len(attached)


def detach(session: Session, policy_id: int, object_ids: list[int]) -> int:
    get_policy(session, policy_id)
    result = session.execute(
        delete(ObjectRetention).where(
            ObjectRetention.policy_id == policy_id, in_ids(ObjectRetention.object_id, object_ids)
        )
    )
    session.commit()
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
    session.commit()
    return result


def _fetch_rows(session: Session, query: Select[Any]) -> list[Any]:
    """A plan may read millions of rows: named tuples straight from psycopg."""
    compiled = query.compile(dialect=session.get_bind().dialect)
    return named_rows(session, str(compiled), dict(compiled.params))


def locking_policies(
    session: Session, *, bucket_id: int, source_system: str
) -> list[RetentionPolicy]:
    """Policies that lock what a job of this source stores in this bucket."""
    return list(
        session.scalars(
            select(RetentionPolicy).where(
                RetentionPolicy.lock_mode.is_not(None) | RetentionPolicy.legal_hold,
                or_(
                    and_(
                        RetentionPolicy.target == RetentionTarget.JOBS,
                        RetentionPolicy.bucket_id == bucket_id,
                        RetentionPolicy.source_system == source_system,
                    ),
                    and_(
                        RetentionPolicy.target == RetentionTarget.VERSIONS,
                        RetentionPolicy.bucket_id.is_(None)
                        | (RetentionPolicy.bucket_id == bucket_id),
                    ),
                ),
            )
        )
    )


def lock_for(policies: list[RetentionPolicy], key: str, now: datetime) -> Lock | None:
    """The strongest lock of the policies governing `key`: COMPLIANCE over GOVERNANCE,
    the most days, a legal hold if any asks. (Tag scopes are not known at upload.)"""
    applying = [
        p
        for p in policies
        if p.target is RetentionTarget.JOBS or not p.key_prefix or key.startswith(p.key_prefix)
    ]
    if not applying:
        return None
    timed = [p for p in applying if p.lock_mode is not None and p.lock_days]
    mode = None
    if timed:
        compliance = any(p.lock_mode is LockMode.COMPLIANCE for p in timed)
        mode = LockMode.COMPLIANCE if compliance else LockMode.GOVERNANCE
    until = now + timedelta(days=max(p.lock_days or 0 for p in timed)) if timed else None
    return Lock(mode, until, any(p.legal_hold for p in applying))


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
    for version, key, bucket in _versions_only_referenced_by(session, result.jobs_to_forget):
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


def _versions_only_referenced_by(session: Session, doomed: list[int]) -> list[tuple[Any, str, str]]:
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
    job = session.get(BackupJob, job_id)
    if job is None:
        raise NotFound(f"backup job {job_id} not found", field="job_id")
    run = RetentionRun(policy_id=None, policy_name=f"deletion of job {job_id}", actor=actor)
    session.add(run)
    session.commit()
    lock_bucket_for_retention(session, job.bucket_id)
    current = Plan(policy_id=0, evaluated_at=datetime.now(UTC))
    current.jobs.append(
        PlannedJob(job.id, job.completed_at or current.evaluated_at, False, (actor,))
    )
    for version, key, bucket in _versions_only_referenced_by(session, [job.id]):
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


def list_runs(
    session: Session, *, policy_id: int | None, after: int | None, limit: int
) -> Page[RetentionRun]:
    query = select(RetentionRun)
    if policy_id is not None:
        query = query.where(RetentionRun.policy_id == policy_id)
    return scalar_page(session, query, RetentionRun.id, after=after, limit=limit)


def get_run(session: Session, run_id: int) -> RetentionRun:
    run = session.get(RetentionRun, run_id)
    if run is None:
        raise NotFound(f"retention run {run_id} not found", field="run_id")
    return run


def run_deletions(
    session: Session, run_id: int, *, after: int | None, limit: int
) -> Page[ObjectVersion]:
    get_run(session, run_id)
    query = select(ObjectVersion).where(ObjectVersion.deleted_by_run_id == run_id)
    return scalar_page(session, query, ObjectVersion.id, after=after, limit=limit)

"""BackupJob handlers: register the job in the catalog, start it when due, mirror its
progress into status, refuse spec changes once it started, and keep (or, when asked,
delete) its backup when the resource goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import kubernetes

from .. import paths
from ..catalog import credentials, jobs, retention
from ..catalog.models import JobStatus, Runner
from ..deadline import Deadline
from ..services import buckets
from ..services import retention as retention_service
from ..services.notify import notify_ended
from ..services.units import unit_of_work
from ..settings import get_settings
from ..specs.backup_job import JobResource, JobSpec
from .backupschedules import SCHEDULE_LABEL
from .followers import RESYNC_SECONDS, Look, looking
from .resources import (
    BACKUP_JOBS,
    FINISHED,
    GROUP,
    VERSION,
    condition,
    job_status,
    source_of,
)
from .runtime import InvalidSpec, domain_errors, finalize_within, read_spec
from .status import patch_status, write_status
from .workload import (
    CATALOG_SECRET_KEY,
    backup_workload,
    catalog_secret,
    job_name,
    memory_budget_mib,
    workload_failure,
)

POLL_SECONDS = get_settings().operator_poll_seconds
# A PVC pod's catalog login outlives its job's deadline by an hour, or lasts this long
# without one (it is dropped as soon as the job ends anyway).
LOGIN_SECONDS = 7 * 86400


def _invalid(error: InvalidSpec, status: Any, generation: int) -> dict[str, Any]:
    """A spec the operator cannot act on: Failed, with the field and the reason."""
    previous = list(status.get("conditions") or [])
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "conditions": [
            condition("Ready", False, "InvalidSpec", str(error), previous, generation),
            condition("Running", False, "InvalidSpec", str(error), previous, generation),
            condition("Failed", True, "InvalidSpec", str(error), previous, generation),
        ],
    }


@kopf.on.resume(GROUP, VERSION, BACKUP_JOBS)
@kopf.on.create(GROUP, VERSION, BACKUP_JOBS)
def register(
    spec: Any,
    name: Any,
    namespace: Any,
    uid: str,
    meta: Any,
    status: Any,
    body: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Record the job in the catalog, once per resource (keyed by its uid)."""
    generation = meta.get("generation", 1)
    try:
        wanted = read_spec(JobSpec, spec)
        resource = read_spec(JobResource, spec)
        with unit_of_work(memo.sessions) as session:
            source = source_of(resource, namespace)
            if source.path:
                with domain_errors(field="spec.source.path"):
                    paths.confined(
                        source.path,
                        memo.app.source_roots,
                        field="spec.source.path",
                        setting="SOURCE_ROOTS",
                    )
            else:
                with domain_errors():
                    memory_budget_mib(resource.resources or memo.app.agent_resources)
            with domain_errors(field="spec.bucket"):
                bucket = buckets.bucket_named(
                    session, memo.store, resource.bucket, create=True, namespace=namespace
                )
            with domain_errors():
                job = jobs.create_job(
                    session,
                    job_name=f"{namespace}/{name}",
                    source_system=source.system,
                    bucket_id=bucket.id,
                    runner=Runner.OPERATOR if source.path else Runner.KUBERNETES,
                    external_uid=uid,
                    namespace=namespace,
                    schedule=(meta.get("labels") or {}).get(SCHEDULE_LABEL),
                    **wanted.model_dump(),
                )
            if job.status.finished and job.runner is Runner.KUBERNETES:
                credentials.revoke(session, job.id)  # it ended while nobody was looking
            new = job_status(job, status, generation, status.get("workload"), wanted.tags)
            _tell_if_resumed(body, status, job)
    except InvalidSpec as error:
        patch_status(patch, _invalid(error, status, generation))
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        raise kopf.PermanentError(str(error)) from None
    if status.get("jobId") is None:
        kopf.info(body, reason="Registered", message=f"catalog job {job.id}, {new['phase']}")
    patch_status(patch, new)
    memo.scheduler.wake()


def _tell_if_resumed(body: Any, status: Any, job: Any) -> None:
    """A run after the first (a worker stopped or died): a Warning saying why."""
    if job.attempts > max(status.get("attempts") or 1, 1):
        kopf.warn(body, reason="Resumed", message=job.error or f"attempt {job.attempts}")


def _unfinished(status: Any, **_: Any) -> bool:
    return bool(status.get("jobId")) and status.get("phase") not in FINISHED


@kopf.daemon(GROUP, VERSION, BACKUP_JOBS, when=_unfinished, cancellation_timeout=5.0)
async def follow(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """While the job is unfinished: look at it whenever the catalog says it changed, and
    when something falls due that nobody will announce (its start time, its deadline,
    its batch Job's state); without the catalog's announcements, every poll interval."""
    with memo.followers.following(body["status"]["jobId"]) as changed:
        await looking(body, changed, lambda current: _look(memo, current))


def _look(memo: kopf.Memo, body: Any) -> Look:
    """Start a PVC job's batch Job when due; mirror the catalog's job into status."""
    spec, meta, status = body["spec"], body["metadata"], body.get("status") or {}
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    workload = status.get("workload")
    # What register accepted (a started job's spec cannot change but for its start).
    wanted, resource = read_spec(JobSpec, spec), read_spec(JobResource, spec)
    with domain_errors(), unit_of_work(memo.sessions) as session:
        if wanted.active_deadline_seconds:
            # Its worker fails it too, at its next heartbeat; this covers a worker that is
            # gone or a pod that never started.
            jobs.fail_overdue_jobs(session, job_id=status["jobId"])
            session.commit()
        job = jobs.get_job(session, status["jobId"])
        if job.runner is Runner.KUBERNETES and not job.status.finished:
            if workload is None and (job.start_time is None or job.start_time <= _now()):
                try:
                    workload = _start_workload(
                        memo, session, wanted, resource, name, namespace, uid, job.id
                    )
                    kopf.info(body, reason="Started", message=f"batch Job {workload} created")
                except credentials.CannotIssue as error:
                    why = f"CatalogLoginRefused: {error}"
                    job = jobs.set_status(session, job.id, JobStatus.FAILED, error=why)
            elif workload is not None:
                failure = _workload_failure(memo, namespace, workload)
                session.refresh(job)  # its pod may have finished it since it was read
                if failure is not None and not job.status.finished:
                    job = jobs.set_status(session, job.id, JobStatus.FAILED, error=failure)
        new = job_status(job, status, meta.get("generation", 1), workload, wanted.tags)
        _tell_if_resumed(body, status, job)
        if job.runner is Runner.KUBERNETES and job.status.finished:
            credentials.revoke(session, job.id)  # its pod's login: useless from now on
            session.commit()  # recorded before anyone is told
            # Its pod has no webhook settings: the operator tells of its end, once.
            notify_ended(session, memo.notifier, job.id)
        reference = resource.retention_policy
        if reference and new["phase"] == "Completed":
            # What it stored is governed by the policy it names (the catalog's `ns/name`).
            try:
                with domain_errors(field="spec.retentionPolicyRef"):
                    retention.govern_job(session, f"{namespace}/{reference}", job.id)
            except InvalidSpec as error:
                kopf.warn(body, reason="PolicyNotFound", message=str(error))
    if new["phase"] != status.get("phase"):
        failed = new["phase"] == "Failed"
        message = next(c["message"] for c in new["conditions"] if c["type"] == "Ready")
        kopf.event(
            body, type="Warning" if failed else "Normal", reason=new["phase"], message=message
        )
    with domain_errors():
        written = write_status(memo.custom, BACKUP_JOBS, body, new, unless_already=status)
    return Look(written, None if job.status.finished else _next_look(memo, job, workload))


def _next_look(memo: kopf.Memo, job: Any, workload: str | None) -> float:
    """Seconds until a look nobody will prompt: without the catalog's announcements, the
    poll interval; with them, what falls due (at the latest, RESYNC_SECONDS)."""
    if not memo.changes.listening.is_set():
        return POLL_SECONDS
    now, due = _now(), [RESYNC_SECONDS]
    if workload is not None:
        due.append(POLL_SECONDS)  # its batch Job's state is the API server's, not the catalog's
    if job.status is JobStatus.PENDING and job.start_time is not None:
        due.append((jobs.as_utc(job.start_time) - now).total_seconds())
    if job.active_deadline_seconds and job.started_at is not None:
        deadline = jobs.as_utc(job.started_at) + timedelta(seconds=job.active_deadline_seconds)
        due.append((deadline - now).total_seconds())
    return max(min(due), 0.05)


def _now() -> datetime:
    return datetime.now(UTC)


def _start_workload(
    memo: kopf.Memo,
    session: Any,
    wanted: JobSpec,
    resource: JobResource,
    name: str,
    namespace: str,
    uid: str,
    job_id: int,
) -> str:
    app = memo.app
    workload = job_name(name, uid)
    try:  # made by an earlier try of this handler: its pod has its login already
        memo.batch.read_namespaced_job(workload, namespace)
        return workload
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise
    database_secret, database_key = app.agent_database_secret, app.agent_database_secret_key
    if app.agent_catalog_access == "per-job":
        deadline = wanted.active_deadline_seconds or LOGIN_SECONDS
        login = credentials.issue(session, job_id, valid_for=timedelta(seconds=deadline + 3600))
        session.commit()  # the role exists before its pod logs in
        secret = catalog_secret(
            name=name,
            namespace=namespace,
            uid=uid,
            suffix=login.role.rsplit("_", 1)[1],
            url=login.url(app.database_url()),
        )
        memo.core.create_namespaced_secret(namespace, secret)
        database_secret, database_key = secret["metadata"]["name"], CATALOG_SECRET_KEY
    manifest = backup_workload(
        name=name,
        namespace=namespace,
        uid=uid,
        resource=resource,
        deadline_seconds=wanted.active_deadline_seconds,
        catalog_job_id=job_id,
        image=app.agent_image,
        database_secret=database_secret,
        database_secret_key=database_key,
        store_secret=app.agent_store_secret,
        store_endpoint=app.minio_endpoint,
        store_secure=app.minio_secure,
        backoff_limit=app.agent_backoff_limit,
        service_account=app.agent_service_account,
        default_resources=app.agent_resources,
    )
    try:
        memo.batch.create_namespaced_job(namespace, manifest)
    except kubernetes.client.ApiException as error:
        if error.status != 409:  # 409: made meanwhile by another try
            raise
    return workload


def _workload_failure(memo: kopf.Memo, namespace: str, workload: str) -> str | None:
    try:
        found = memo.batch.api_client.sanitize_for_serialization(
            memo.batch.read_namespaced_job(workload, namespace)
        )
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return f"WorkloadMissing: batch Job {workload} was deleted before it finished"
        raise
    return workload_failure(found)


@kopf.on.update(GROUP, VERSION, BACKUP_JOBS, field="spec")
def spec_changed(
    old: Any,
    new: Any,
    meta: Any,
    status: Any,
    body: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Before it starts, a job may move (start time, key prefix); after, it is a record."""
    generation = meta.get("generation", 1)
    previous = list(status.get("conditions") or [])
    fields = sorted(
        k for k in set(old or {}) | set(new or {}) if (old or {}).get(k) != (new or {}).get(k)
    )
    movable = {"startAt", "keyPrefix"}
    job_id = status.get("jobId")
    refusal = None
    if job_id is None:
        return  # never registered (invalid): nothing to keep consistent
    if not set(fields) <= movable:
        refusal = f"spec.{', spec.'.join(sorted(set(fields) - movable))} cannot change"
    else:
        try:
            moved = read_spec(JobSpec, new)
            with domain_errors(), unit_of_work(memo.sessions) as session:
                jobs.reschedule(
                    session, job_id, start_time=moved.start_time, key_prefix=moved.key_prefix
                )
        except InvalidSpec as error:
            refusal = error.message
    rejected = refusal is not None
    message = (
        f"{refusal}: jobs are immutable records once registered; create a new BackupJob"
        if rejected
        else "spec accepted"
    )
    reason = "Immutable" if rejected else "Accepted"
    verdict = condition("SpecRejected", rejected, reason, message, previous, generation)
    patch_status(patch, {"observedGeneration": generation, "conditions": [verdict]})
    if rejected:
        kopf.warn(body, reason="SpecRejected", message=message)
    memo.scheduler.wake()


@kopf.on.delete(GROUP, VERSION, BACKUP_JOBS)
def delete(
    spec: Any,
    name: Any,
    namespace: Any,
    status: Any,
    body: Any,
    memo: kopf.Memo,
    logger: Any,
    runtime: timedelta,
    **_: Any,
) -> None:
    """The catalog keeps the job's records (history outlives resources); its objects go
    only when the spec asks for it. Past DELETION_DEADLINE_SECONDS the resource is let go
    anyway, with a Warning saying what blocked the rest (nothing is lost: what was not
    deleted stays in the bucket and the catalog)."""
    job_id = status.get("jobId")
    if job_id is None:
        return
    done, result = finalize_within(
        memo,
        runtime,
        body,
        lambda deadline: _release(memo, spec, job_id, f"{namespace}/{name}", deadline),
        leaves=f"Catalog job {job_id} and the versions not deleted stay, as the catalog shows",
    )
    if not done:
        return
    if result is None:
        logger.info("catalog job %s kept; its objects stay in the bucket", job_id)
        return
    logger.info(
        "catalog job %s forgotten: %d versions deleted, %d locked, %d refused",
        job_id,
        len(result.deleted),
        len(result.locked),
        len(result.refused),
    )
    if result.locked or result.refused:
        kopf.warn(
            body,
            reason="ObjectsKept",
            message=f"{len(result.locked)} locked and {len(result.refused)} refused versions stay",
        )


def _release(
    memo: kopf.Memo, spec: Any, job_id: int, resource: str, deadline: Deadline
) -> retention_service.ApplyResult | None:
    """Cancel the job if unfinished; forget it and delete its objects if asked to."""
    with unit_of_work(memo.sessions) as session:
        deadline.step(f"cancelling catalog job {job_id}")
        job = jobs.get_job(session, job_id)
        if not job.status.finished:
            jobs.cancel_job(session, job_id)
        if job.runner is Runner.KUBERNETES:
            credentials.revoke(session, job_id)
        session.commit()  # cancelled, whatever the deletion of its objects does
        # (Read as it is, not parsed: nothing may block a deletion.)
        if not spec.get("deleteObjectsOnDelete", False):
            return None
        return retention_service.forget_job(
            session, memo.store, job_id, actor=f"kubernetes:{resource}", deadline=deadline
        )

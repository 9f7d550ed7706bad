"""RetentionPolicy handlers: reconcile the resource into the catalog's policy (named
`namespace/name`), apply it (or only dry-run it) on its interval, and show the last
run in status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from ..catalog import retention
from ..deadline import Deadline, DeadlineExceeded, run_within
from ..errors import NotFound, Unavailable
from ..retry import RetriesExhausted
from ..services import buckets
from ..services import retention as retention_service
from ..services.units import unit_of_work
from ..settings import get_settings
from ..specs.fields import crd_path, read_resource
from ..specs.retention_policy import PolicyResource, PolicySpec
from .resources import (
    GROUP,
    RETENTION_POLICIES,
    VERSION,
    condition,
    interval_seconds,
    iso,
)
from .runtime import InvalidSpec, domain_errors, finalize_within, read_spec
from .status import patch_status

POLL_SECONDS = get_settings().operator_poll_seconds
RETRY_BLOCKED = timedelta(minutes=1)


def catalog_name(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def _ready(ok: bool, reason: str, message: str, status: Any, generation: int) -> list[Any]:
    previous = list(status.get("conditions") or [])
    return [condition("Ready", ok, reason, message, previous, generation)]


@kopf.on.resume(GROUP, VERSION, RETENTION_POLICIES)
@kopf.on.create(GROUP, VERSION, RETENTION_POLICIES)
@kopf.on.update(GROUP, VERSION, RETENTION_POLICIES, field="spec")
def reconcile(
    spec: Any,
    name: Any,
    namespace: Any,
    meta: Any,
    status: Any,
    body: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    reason: Any,
    **_: Any,
) -> None:
    generation = meta.get("generation", 1)
    try:
        resource = read_spec(PolicyResource, spec)
        fields = read_resource(PolicySpec, spec)  # the catalog parses and checks them
        with unit_of_work(memo.sessions) as session:
            if resource.bucket:
                with domain_errors(field="spec.scope.bucket"):
                    bucket = buckets.bucket_named(
                        session, memo.store, resource.bucket, create=False, namespace=namespace
                    )
                fields["bucket_id"] = bucket.id
            with domain_errors(naming=lambda field: crd_path(PolicySpec, field)):
                policy = retention.put_policy(
                    session,
                    name=catalog_name(namespace, name),
                    namespace=namespace,  # whatever its scope, its namespace's buckets
                    **fields,
                )
    except InvalidSpec as error:
        invalid = _ready(False, "InvalidSpec", str(error), status, generation)
        patch_status(patch, {"observedGeneration": generation, "conditions": invalid})
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        # A bucket appears with its first backup: try again later, not never.
        raise kopf.TemporaryError(str(error), delay=30) from None
    patch.status["policyId"] = policy.id
    patch.status["observedGeneration"] = generation
    # A new or changed policy runs at once; a resumed one keeps its schedule.
    keep_schedule = reason == "resume" and status.get("nextRunAt")
    patch.status["nextRunAt"] = status.get("nextRunAt") if keep_schedule else iso(datetime.now(UTC))
    message = "dry run only" if resource.dry_run else "applied on its interval"
    patch_status(patch, {"conditions": _ready(True, "Reconciled", message, status, generation)})


def _due(status: Any, **_: Any) -> bool:
    return bool(status.get("policyId"))


@kopf.timer(GROUP, VERSION, RETENTION_POLICIES, interval=POLL_SECONDS, when=_due)
def run(
    spec: Any,
    name: Any,
    namespace: Any,
    status: Any,
    body: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    now = datetime.now(UTC)
    next_run = status.get("nextRunAt")
    if next_run and datetime.fromisoformat(next_run.replace("Z", "+00:00")) > now:
        return
    policy_id = status["policyId"]
    actor = f"kubernetes:{namespace}/{name}"
    generation = body["metadata"].get("generation", 1)
    with domain_errors():  # what reconcile accepted; a spec changed since, it reports
        resource = read_spec(PolicyResource, spec)
        policy = read_spec(PolicySpec, spec)
    # With requireDryRun, the first run after each change is a dry run, for people to see.
    owed = policy.require_dry_run and status.get("dryRunGeneration") != generation
    every = timedelta(seconds=interval_seconds(resource.interval))
    patch.status["lastRunAt"] = iso(now)
    if resource.dry_run or owed:
        with domain_errors(), unit_of_work(memo.sessions) as session:
            plan = retention.dry_run(session, policy_id)
        delete = plan.to_delete
        last = {
            "dryRun": True,
            "kept": len(plan.versions) - len(delete),
            "deleted": len(delete),
            "jobsForgotten": len(plan.jobs_to_forget),
            "bytesFreed": plan.bytes_to_free,
        }
        patch.status["dryRunGeneration"] = generation
        patch.status["lastDryRun"] = last
    else:
        with domain_errors():
            try:
                last = run_within(
                    memo.app.retention_run_deadline_seconds,
                    lambda deadline: _apply(memo, policy_id, actor, deadline),
                )
            except (DeadlineExceeded, Unavailable, RetriesExhausted) as blocked:
                # Reported, and tried again soon; the next run carries on from what is left.
                retry = min(every, RETRY_BLOCKED)
                error = f"{type(blocked).__name__}: {blocked}"
                # (A merge patch: the last run's other figures are removed, not kept.)
                gone = dict.fromkeys(status.get("lastRun") or {})
                patch.status["lastRun"] = {**gone, "dryRun": False, "error": error}
                patch.status["nextRunAt"] = iso(now + retry)
                kopf.warn(
                    body,
                    reason="RunFailed",
                    message=f"{error}; tried again in {retry.total_seconds():g}s",
                )
                return
    patch.status["lastRun"] = last
    patch.status["nextRunAt"] = iso(now + every)
    verb = "would delete" if last["dryRun"] else "deleted"
    kopf.info(
        body,
        reason="DryRun" if last["dryRun"] else "Applied",
        message=f"kept {last['kept']}, {verb} {last['deleted']} versions",
    )


def _apply(memo: kopf.Memo, policy_id: int, actor: str, deadline: Deadline) -> dict[str, Any]:
    with memo.sessions() as session:
        result = retention_service.apply(
            session,
            memo.store,
            policy_id,
            actor=actor,
            deadline=deadline,
            prune_waste=memo.app.pack_prune_waste,
        )
        return {
            "dryRun": False,
            "runId": result.run.id,
            "kept": result.run.kept,
            "deleted": len(result.deleted),
            "locked": len(result.locked),
            "refused": len(result.refused),
            "jobsForgotten": result.run.forgotten_jobs,
            "bytesFreed": result.bytes_freed,
            "error": None,  # (a merge patch: removes a previous run's error)
        }


@kopf.on.delete(GROUP, VERSION, RETENTION_POLICIES)
def delete(
    status: Any, body: Any, memo: kopf.Memo, logger: Any, runtime: timedelta, **_: Any
) -> None:
    """The catalog's policy goes (it would go on locking new uploads); its audit of runs
    stays, under the policy's name."""
    policy_id = status.get("policyId")
    if policy_id is None:
        return
    finalize_within(
        memo,
        runtime,
        body,
        lambda _: _delete_policy(memo, policy_id, logger),
        leaves=f"Catalog policy {policy_id} stays (and goes on applying to new uploads): "
        f"delete it with DELETE /retention-policies/{policy_id}",
    )


def _delete_policy(memo: kopf.Memo, policy_id: int, logger: Any) -> None:
    with unit_of_work(memo.sessions) as session:
        try:
            retention.delete_policy(session, policy_id)
        except NotFound:
            logger.info("catalog policy %s was already gone", policy_id)

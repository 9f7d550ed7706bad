"""BackupSchedule handlers: create BackupJobs on a cron schedule (never two unfinished at
once unless the schedule allows it) and prune the old finished ones."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import kopf
import kubernetes
from croniter import croniter

from ..specs.backup_schedule import ConcurrencyPolicy, ScheduleSpec
from .followers import RESYNC_SECONDS, Look, looking, seconds_until
from .resources import (
    BACKUP_JOBS,
    BACKUP_SCHEDULES,
    FINISHED,
    GROUP,
    VERSION,
    condition,
    iso,
    parse_time,
)
from .runtime import SCHEDULE_INTERVAL, InvalidSpec, domain_errors, read_spec
from .status import write_status

SCHEDULE_LABEL = f"{GROUP}/schedule"
SCHEDULED_AT = f"{GROUP}/scheduled-at"  # the firing a job was made for: the pruning order


def offset(uid: str, spread: int) -> timedelta:
    """A fixed delay per schedule within `spread` seconds: the same on every replica and
    restart, different between schedules on one cron."""
    if spread <= 0:
        return timedelta()
    return timedelta(seconds=int(hashlib.sha256(uid.encode()).hexdigest(), 16) % (spread + 1))


def next_fire(expression: str, after: datetime, uid: str, spread: int) -> datetime:
    base = after - offset(uid, spread)
    fire: datetime = croniter(expression, base).get_next(datetime)
    return fire + offset(uid, spread)


def _job_manifest(schedule: ScheduleSpec, name: str, namespace: str, uid: str, at: datetime) -> Any:
    labels = {**(schedule.job_labels or {}), SCHEDULE_LABEL: name}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupJob",
        "metadata": {
            # One name per firing: a retried tick finds the job it made (409), not a twin.
            "name": f"{name[:40]}-{int(at.timestamp()) // 60}",
            "namespace": namespace,
            "labels": labels,
            "annotations": {SCHEDULED_AT: iso(at)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "BackupSchedule",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "spec": dict(schedule.job_spec),
    }


class Child(NamedTuple):
    """A BackupJob a schedule made, as the index keeps it."""

    name: str
    phase: str | None
    fired: tuple[str, str]  # (its firing, its creation): the pruning order


@kopf.index(GROUP, VERSION, BACKUP_JOBS, labels={SCHEDULE_LABEL: kopf.PRESENT})
def scheduled_jobs(
    namespace: Any, name: Any, labels: Any, annotations: Any, meta: Any, status: Any, **_: Any
) -> dict[tuple[str, str], Child]:
    """Each schedule's BackupJobs, kept current from the watch: a schedule reads them
    here instead of listing them from the API server."""
    fired = ((annotations or {}).get(SCHEDULED_AT, ""), meta.get("creationTimestamp") or "")
    return {(namespace, labels[SCHEDULE_LABEL]): Child(name, status.get("phase"), fired)}


def _prune(memo: kopf.Memo, namespace: str, finished: list[Child], keep: int) -> list[str]:
    """Delete all but the newest `keep` of these finished jobs; answer their names."""
    newest_first = sorted(finished, key=lambda child: child.fired, reverse=True)
    pruned = []
    for child in newest_first[keep:]:
        try:
            memo.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, BACKUP_JOBS, child.name
            )
        except kubernetes.client.ApiException as error:
            if error.status != 404:  # gone already (the index had not heard yet)
                raise
        else:
            pruned.append(child.name)
    return pruned


@kopf.on.event(GROUP, VERSION, BACKUP_SCHEDULES)
async def schedule_changed(namespace: Any, name: Any, memo: kopf.Memo, **_: Any) -> None:
    memo.schedules.changed((namespace, name))


@kopf.on.event(GROUP, VERSION, BACKUP_JOBS, labels={SCHEDULE_LABEL: kopf.PRESENT})
async def scheduled_job_changed(namespace: Any, labels: Any, memo: kopf.Memo, **_: Any) -> None:
    """A schedule's job started, ended or went: its schedule looks (active, pruning)."""
    memo.schedules.changed((namespace, labels[SCHEDULE_LABEL]))


@kopf.daemon(GROUP, VERSION, BACKUP_SCHEDULES, cancellation_timeout=5.0)
async def run(body: kopf.Body, memo: kopf.Memo, **indices: Any) -> None:
    """Sleeps until the schedule's next firing, or until it or one of its jobs changes."""
    scheduled: kopf.Index[tuple[str, str], Child] = indices["scheduled_jobs"]
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    with memo.schedules.following(key) as changed:
        await looking(body, changed, lambda current: _tick(memo, current, scheduled))


def _tick(memo: kopf.Memo, body: Any, scheduled: kopf.Index[tuple[str, str], Child]) -> Look:
    spec, meta, status = body["spec"], body["metadata"], body.get("status") or {}
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = meta.get("generation", 1)
    previous = list(status.get("conditions") or [])
    try:
        wanted = read_spec(ScheduleSpec, spec)
        if not croniter.is_valid(wanted.schedule):
            why = f"{wanted.schedule!r} is not a five-field cron expression"
            raise InvalidSpec("spec.schedule", why)
    except InvalidSpec as error:
        message = str(error)
        if status.get("observedGeneration") != generation:
            kopf.warn(body, reason="InvalidSpec", message=message)
        invalid = condition("Ready", False, "InvalidSpec", message, previous, generation)
        verdict = {"observedGeneration": generation, "conditions": [invalid]}
        with domain_errors():
            written = write_status(
                memo.custom, BACKUP_SCHEDULES, body, verdict, unless_already=status
            )
        return Look(written, RESYNC_SECONDS)  # until its spec changes
    expression, spread = wanted.schedule, wanted.random_offset_seconds
    now = datetime.now(UTC)
    first = croniter(expression, now).get_next(datetime)
    period = (croniter(expression, first).get_next(datetime) - first).total_seconds()
    SCHEDULE_INTERVAL.labels(namespace, name).set(period)
    new: dict[str, Any] = {}
    with domain_errors():
        children = list(scheduled.get((namespace, name), []))
        active = sorted(c.name for c in children if c.phase not in FINISHED)
        pruned = _prune(
            memo,
            namespace,
            [c for c in children if c.phase == "Completed"],
            wanted.successful_jobs_history_limit,
        ) + _prune(
            memo,
            namespace,
            [c for c in children if c.phase in {"Failed", "Cancelled"}],
            wanted.failed_jobs_history_limit,
        )
        due = status.get("nextScheduleTime")
        if due is None or status.get("observedGeneration") != generation:
            due = iso(next_fire(expression, now, uid, spread))  # (re)scheduled from now
        elif parse_time(due) <= now and not wanted.suspend:
            if active and wanted.concurrency_policy is ConcurrencyPolicy.FORBID:
                kopf.info(body, reason="Skipped", message=f"{active[0]} is still unfinished")
            else:
                manifest = _job_manifest(wanted, name, namespace, uid, parse_time(due))
                try:
                    memo.custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, BACKUP_JOBS, manifest
                    )
                except Exception as error:
                    if getattr(error, "status", None) != 409:
                        raise
                active.append(manifest["metadata"]["name"])
                new["lastScheduleTime"] = due
                kopf.info(body, reason="Created", message=manifest["metadata"]["name"])
            due = iso(next_fire(expression, now, uid, spread))
        for gone in pruned:
            kopf.info(body, reason="Pruned", message=gone)
        new.update(
            nextScheduleTime=due,
            active=active,
            observedGeneration=generation,
            conditions=[
                condition("Ready", True, "Scheduled", f"next at {due}", previous, generation)
            ],
        )
        # An idle schedule writes nothing: it sends the API server no request.
        written = write_status(memo.custom, BACKUP_SCHEDULES, body, new, unless_already=status)
    # A suspended or skipped firing is looked at again when its spec or a job changes.
    return Look(written, seconds_until(parse_time(str(due))))


@kopf.on.delete(GROUP, VERSION, BACKUP_SCHEDULES, optional=True)
def forget(name: Any, namespace: Any, **_: Any) -> None:
    """No finalizer: only the schedule's metric goes."""
    with contextlib.suppress(KeyError):  # it never ticked
        SCHEDULE_INTERVAL.remove(namespace, name)

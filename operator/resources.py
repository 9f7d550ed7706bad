"""The custom resources as the operator reads and writes them: names, the mapping of a
spec to the domain's arguments, and the status built from a catalog job. Pure code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import Invalid
from ..specs.backup_job import JobResource

GROUP = "minio-backup.dev"
VERSION = "v1alpha1"
BACKUP_JOBS = "backupjobs"
RETENTION_POLICIES = "retentionpolicies"
BACKUP_SCHEDULES = "backupschedules"

# Where a PVC is mounted in the backup pod; the catalog names the source by the claim.
MOUNT_PATH = "/source"

PHASES = {
    "pending": "Pending",
    "running": "Running",
    "completed": "Completed",
    "partially_failed": "PartiallyFailed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
FINISHED = {"Completed", "PartiallyFailed", "Failed", "Cancelled"}
FAILURE_PATHS = 5  # failed paths named in status; the API lists them all


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Source:
    """A BackupJob's source: the catalog's name for it, and how it is reached."""

    system: str  # the catalog's source_system: what retention groups jobs by
    path: str | None  # a path mounted in the operator, or None for a PVC
    claim: str | None = None
    sub_path: str | None = None


def source_of(resource: JobResource, namespace: str) -> Source:
    if resource.claim_name is not None:
        sub = (resource.sub_path or "").strip("/")
        system = f"pvc://{namespace}/{resource.claim_name}" + (f"/{sub}" if sub else "")
        return Source(system, None, resource.claim_name, sub or None)
    if resource.path is None:  # the CRD's oneOf makes this unreachable through the API
        raise Invalid("give source.pvc or source.path", field="source")
    return Source(resource.path, resource.path)


def parse_time(text: str) -> datetime:
    """A time as status and specs write it (`iso`)."""
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


# What the CRDs (metav1.Condition) allow.
REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")
MAX_MESSAGE = 32768


def condition(
    kind: str, ok: bool, reason: str, message: str, previous: list[dict[str, Any]], generation: int
) -> dict[str, Any]:
    """One condition; its lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def job_conditions(
    phase: str, error: str | None, previous: list[dict[str, Any]], generation: int
) -> list[dict[str, Any]]:
    """Ready, Running and Failed, rebuilt whole from the phase (the same however often)."""
    # An error names its kind first ("WorkerLost: ..."); a condition's reason must be a
    # word like that (the API server refuses the whole status otherwise).
    kind = error.split(":", 1)[0] if error else ""
    reason = kind if REASON.fullmatch(kind) else phase
    failed = phase in {"Failed", "PartiallyFailed"}
    return [
        condition(
            "Ready",
            phase == "Completed",
            phase,
            error or f"the backup is {phase.lower()}",
            previous,
            generation,
        ),
        condition(
            "Running",
            phase == "Running",
            phase,
            "files are being backed up" if phase == "Running" else f"the backup is {phase.lower()}",
            previous,
            generation,
        ),
        condition(
            "Failed",
            failed,
            reason if failed else phase,
            (error or "") if failed else "no failure",
            previous,
            generation,
        ),
    ]


def job_status(
    job: Any,
    previous: Mapping[str, Any],
    generation: int,
    workload: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The status of a BackupJob from its catalog job (a `BackupJob` row)."""
    stats = job.stats
    phase = PHASES[str(job.status.value)]
    uploaded, saved = stats.bytes_uploaded, stats.bytes_saved
    failed_files = stats.failed_files
    error = job.error
    if phase == "PartiallyFailed":
        files = "1 file" if failed_files == 1 else f"{failed_files} files"
        error = f"PartiallyFailed: {files} could not be backed up"
    status = {
        "phase": phase,
        "jobId": job.id,
        "observedGeneration": generation,
        "files": stats.files_seen,
        "uploaded": stats.uploads,
        "deduplicated": stats.duplicate,
        "unchanged": stats.unchanged,
        "bytesRead": stats.bytes_read,
        "bytesUploaded": uploaded,
        "bytesDeduplicated": saved,
        # The share of new content that deduplication kept from being uploaded.
        "dedupRatio": round(saved / (saved + uploaded), 3) if saved + uploaded else 0.0,
        "startedAt": iso(job.started_at),
        "completedAt": iso(job.completed_at),
        "attempts": job.attempts,
        "conditions": job_conditions(
            phase, error, list(previous.get("conditions") or []), generation
        ),
    }
    if failed_files:
        named = stats.failed_paths()[:FAILURE_PATHS]
        status["failures"] = {"count": failed_files, "firstPaths": named}
    if workload is not None:
        status["workload"] = workload
    if tags:
        status["tags"] = dict(tags)
    return status


def interval_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]]

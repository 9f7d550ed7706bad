"""The batch Job that backs up a PVC: the project's own image running the engine's
command (`backup --job ID --source /source`) with the volume mounted read-only."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kubernetes.utils import parse_quantity

from ..errors import Invalid
from ..specs.backup_job import JobResource
from .resources import GROUP, MOUNT_PATH, VERSION

CATALOG_SECRET_KEY = "SQLALCHEMY_DATABASE_URL"


def job_name(backup_name: str, uid: str) -> str:
    # Deterministic (a retried handler finds the Job it made) and within 63 characters.
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"backup-{backup_name[:46]}-{digest}".rstrip("-")


def backup_workload(
    *,
    name: str,
    namespace: str,
    uid: str,
    resource: JobResource,
    deadline_seconds: int | None,
    catalog_job_id: int,
    image: str,
    database_secret: str,
    database_secret_key: str,
    store_secret: str,
    store_endpoint: str,
    store_secure: bool,
    backoff_limit: int,
    service_account: str | None,
    default_resources: Mapping[str, Any],
) -> dict[str, Any]:
    resources = dict(resource.resources or default_resources)
    if resource.credentials_secret:
        access = (resource.credentials_secret, resource.access_key_key)
        secret = (resource.credentials_secret, resource.secret_key_key)
    else:
        access = (store_secret, "MINIO_ACCESS_KEY")
        secret = (store_secret, "MINIO_SECRET_KEY")
    mount: dict[str, Any] = {"name": "source", "mountPath": MOUNT_PATH, "readOnly": True}
    if resource.sub_path:
        mount["subPath"] = resource.sub_path
    labels = {
        "app.kubernetes.io/name": "minio-backup-operator",
        "app.kubernetes.io/component": "backup",
        f"{GROUP}/backupjob": name,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "backup",
                "image": image,
                "args": ["backup", "--job", str(catalog_job_id), "--source", MOUNT_PATH],
                "env": [
                    _from_secret("SQLALCHEMY_DATABASE_URL", database_secret, database_secret_key),
                    {"name": "MINIO_ENDPOINT", "value": store_endpoint},
                    {"name": "MINIO_SECURE", "value": "true" if store_secure else "false"},
                    _from_secret("MINIO_ACCESS_KEY", *access),
                    _from_secret("MINIO_SECRET_KEY", *secret),
                    *_memory_budget(resources),
                ],
                "volumeMounts": [mount, {"name": "tmp", "mountPath": "/tmp"}],
                "resources": resources,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": [
            {
                "name": "source",
                "persistentVolumeClaim": {"claimName": resource.claim_name, "readOnly": True},
            },
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if service_account:
        pod["serviceAccountName"] = service_account
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, uid),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [_owned_by(name, uid)],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": 86400,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    if deadline_seconds:
        # Kubernetes stops the pod itself; the catalog fails the job by the same deadline.
        manifest["spec"]["activeDeadlineSeconds"] = deadline_seconds
    return manifest


def catalog_secret(*, name: str, namespace: str, uid: str, suffix: str, url: str) -> dict[str, Any]:
    """The Secret holding a PVC job's own catalog login (its pod's only access to the
    catalog), collected with its BackupJob."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{job_name(name, uid)}-catalog-{suffix}",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "minio-backup-operator",
                "app.kubernetes.io/component": "backup",
                f"{GROUP}/backupjob": name,
            },
            "ownerReferences": [_owned_by(name, uid)],
        },
        "type": "Opaque",
        "stringData": {CATALOG_SECRET_KEY: url},
    }


def _owned_by(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupJob",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def memory_budget_mib(resources: Mapping[str, Any]) -> int | None:
    """Half the pod's memory limit for file contents (BACKUP_MEMORY_MIB), the rest for
    the process itself (about 100 MiB) and a margin; no limit, the engine's default."""
    limit = (resources.get("limits") or {}).get("memory")
    if limit is None:
        return None
    try:
        size = parse_quantity(limit)  # type: ignore[no-untyped-call]
    except ValueError:
        raise Invalid(f"{limit!r} is not a quantity", field="resources.limits.memory") from None
    return max(64, int(size // (2 * 1024 * 1024)))


def _memory_budget(resources: Mapping[str, Any]) -> list[dict[str, Any]]:
    mib = memory_budget_mib(resources)
    return [] if mib is None else [{"name": "BACKUP_MEMORY_MIB", "value": str(mib)}]


def _from_secret(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def workload_failure(job: Mapping[str, Any]) -> str | None:
    """Why a batch Job ended without its catalog job ending (failed for good, or
    succeeded with nothing recorded), or None while it has not ended."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "JobFailed"
            return f"{reason}: {cond.get('message') or 'the backup pod failed'}"
        if cond.get("type") == "Complete":
            return (
                f"WorkloadEndedEarly: batch Job {job['metadata']['name']} succeeded, "
                "but its backup did not finish in the catalog"
            )
    return None

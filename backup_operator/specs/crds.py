"""The CRDs generated from the specs: `python -m backup_operator.specs.crds` (make
crd-schemas) writes them into crds/ and the chart's crds/; a test fails when the files
differ from what the specs say."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from . import backup_job, backup_schedule, retention_policy
from .fields import JsonSchema, crd_properties

GROUP = "minio-backup.dev"
VERSION = "v1alpha1"
HEADER = "# Generated from backup_operator/specs by `make crd-schemas`; edit the spec, not this.\n"

CONDITIONS: JsonSchema = {  # metav1.Condition, as Kubernetes defines it
    "description": "Kubernetes conditions (metav1.Condition), one per type.",
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "maxItems": 16,
    "items": {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {
                "type": "string",
                "maxLength": 316,
                "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            },
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            },
            "message": {"type": "string", "maxLength": 32768},
        },
    },
}


READY_COLUMN = {
    "name": "Ready",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
}
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _retention_run(description: str) -> JsonSchema:
    return {
        "description": description,
        "type": "object",
        "properties": {
            "dryRun": {"type": "boolean"},
            "runId": {"type": "integer", "description": "its audit: GET /retention-runs/{runId}"},
            **{
                count: {"type": "integer"}
                for count in ("kept", "deleted", "locked", "refused", "jobsForgotten", "bytesFreed")
            },
            "error": {"type": "string"},
        },
    }


def spec_schema(
    *models: Any, extra: JsonSchema, objects: dict[str, JsonSchema] | None = None
) -> JsonSchema:
    properties = crd_properties(*models)
    for path, more in (objects or {}).items():
        *parents, leaf = path.split(".")
        node = properties
        for parent in parents:
            node = node[parent]["properties"]
        node[leaf] = {**more, **node[leaf]}
    return {"type": "object", **extra, "properties": properties}


def retention_policies() -> JsonSchema:
    spec = spec_schema(
        retention_policy.PolicySpec,
        retention_policy.PolicyResource,
        extra=retention_policy.CRD_SPEC,
        objects=retention_policy.CRD_OBJECTS,
    )
    status = {
        "type": "object",
        "properties": {
            "policyId": {"type": "integer"},
            "observedGeneration": {"type": "integer"},
            "lastRunAt": {"type": "string", "format": "date-time"},
            "nextRunAt": {"type": "string", "format": "date-time"},
            "lastRun": _retention_run(
                "The last run, applied or dry (error set when it was blocked)."
            ),
            "lastDryRun": _retention_run("The last dry run (what a run would delete)."),
            "dryRunGeneration": {"type": "integer"},
            "conditions": CONDITIONS,
        },
    }
    return _crd(
        kind="RetentionPolicy",
        plural="retentionpolicies",
        short_names=["rp"],
        columns=[
            {"name": "Target", "type": "string", "jsonPath": ".spec.target"},
            READY_COLUMN,
            {"name": "Kept", "type": "integer", "jsonPath": ".status.lastRun.kept"},
            {"name": "Deleted", "type": "integer", "jsonPath": ".status.lastRun.deleted"},
            {"name": "Next", "type": "date", "jsonPath": ".status.nextRunAt"},
            AGE_COLUMN,
        ],
        description="Retention rules (restic's forget semantics) over object versions or "
        "over the completed jobs of a source, applied on an interval; optionally a dry run "
        "only.",
        spec=spec,
        status=status,
    )


def backup_jobs() -> JsonSchema:
    spec = spec_schema(
        backup_job.JobSpec,
        backup_job.JobResource,
        extra=backup_job.CRD_SPEC,
        objects=backup_job.CRD_OBJECTS,
    )
    counts = ("files", "uploaded", "deduplicated", "unchanged", "bytesRead", "bytesUploaded")
    status = {
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "enum": [
                    "Pending",
                    "Running",
                    "Completed",
                    "PartiallyFailed",
                    "Failed",
                    "Cancelled",
                ],
            },
            "jobId": {"type": "integer"},
            "observedGeneration": {"type": "integer"},
            **{count: {"type": "integer"} for count in counts},
            "bytesDeduplicated": {"type": "integer"},
            "dedupRatio": {"type": "number"},
            "startedAt": {"type": "string", "format": "date-time"},
            "completedAt": {"type": "string", "format": "date-time"},
            "workload": {"type": "string"},
            "attempts": {
                "description": "Runs of this backup so far: more than one when a worker "
                "stopped and it was resumed (the Resumed event says why).",
                "type": "integer",
            },
            "failures": {
                "description": "Files not backed up (all of them at "
                "GET /backup-jobs/{jobId}/failures).",
                "type": "object",
                "properties": {
                    "count": {"type": "integer"},
                    "firstPaths": {"type": "array", "items": {"type": "string"}},
                },
            },
            "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            "conditions": CONDITIONS,
        },
    }
    return _crd(
        kind="BackupJob",
        plural="backupjobs",
        short_names=["bj"],
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            READY_COLUMN,
            {"name": "Bucket", "type": "string", "jsonPath": ".spec.bucket"},
            {"name": "Files", "type": "integer", "jsonPath": ".status.files"},
            {"name": "Uploaded", "type": "integer", "jsonPath": ".status.uploaded"},
            {"name": "Deduplicated", "type": "integer", "jsonPath": ".status.deduplicated"},
            AGE_COLUMN,
        ],
        description="A backup of one source into one bucket. Jobs are immutable records: "
        "once a job has started, the operator refuses spec changes (condition SpecRejected).",
        spec=spec,
        status=status,
    )


def backup_schedules() -> JsonSchema:
    spec = spec_schema(
        backup_schedule.ScheduleSpec,
        extra=backup_schedule.CRD_SPEC,
        objects=backup_schedule.CRD_OBJECTS,
    )
    status = {
        "type": "object",
        "properties": {
            "lastScheduleTime": {"type": "string", "format": "date-time"},
            "nextScheduleTime": {"type": "string", "format": "date-time"},
            "active": {"type": "array", "items": {"type": "string"}},
            "observedGeneration": {"type": "integer"},
            "conditions": CONDITIONS,
        },
    }
    return _crd(
        kind="BackupSchedule",
        plural="backupschedules",
        short_names=["bs"],
        columns=[
            {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
            READY_COLUMN,
            {"name": "Last", "type": "date", "jsonPath": ".status.lastScheduleTime"},
            {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
            AGE_COLUMN,
        ],
        description="Creates BackupJobs on a cron schedule and prunes the old finished ones.",
        spec=spec,
        status=status,
    )


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    columns: list[Any],
    description: str,
    spec: JsonSchema,
    status: JsonSchema,
) -> JsonSchema:
    schema = {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {"spec": spec, "status": status},
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["backups"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


GENERATED = {
    "backupjobs.yaml": backup_jobs,
    "backupschedules.yaml": backup_schedules,
    "retentionpolicies.yaml": retention_policies,
}


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # yaml has no stubs here
    def ignore_aliases(self, data: Any) -> bool:  # every schema spelt out, no &anchors
        return True


def render(name: str) -> str:
    body: str = yaml.dump(GENERATED[name](), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    for name in GENERATED:
        for folder in (root / "crds", root / "charts" / "minio-backup-operator" / "crds"):
            (folder / name).write_text(render(name))
            print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

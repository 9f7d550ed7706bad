"""A backup job's spec: every field once. The API's JobCreate derives from `JobSpec`; the
BackupJob CRD's spec schema is generated from `JobSpec` and `JobResource` (what only the
resource says: its source, its bucket by name, references, the pod's resources); the
operator reads a resource with them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .buckets import BucketName
from .fields import Crd, JsonSchema, MaxLength, Pattern

MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MAX_PACK_THRESHOLD = 64 * 1024 * 1024
# 68 years: beyond, the database's interval arithmetic overflows.
MAX_DEADLINE_SECONDS = 2**31 - 1

RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
TAGS_SCHEMA: JsonSchema = {
    "type": "object",
    "maxProperties": MAX_TAGS,
    "additionalProperties": {"type": "string", "maxLength": MAX_TAG_VALUE},
}
QUANTITY = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}


class JobSpec(BaseModel):
    """What a backup job says, wherever it comes from (the API or a resource)."""

    key_prefix: Annotated[str, Crd("keyPrefix")] = Field(
        "", max_length=512, description="object keys are <prefix>/<file path>"
    )
    start_time: Annotated[
        datetime | None,
        # A resource's time carries its zone (RFC 3339); the API takes naive times as UTC.
        Crd("startAt", schema={"type": "string", "format": "date-time", "pattern": RFC3339}),
    ] = Field(
        None,
        description="the job waits until then; omitted, it starts at once (the API takes "
        "a time without a zone as UTC)",
    )
    rehash: Annotated[bool, Crd("rehash")] = Field(
        False, description="hash every file, even those whose size and mtime are unchanged"
    )
    active_deadline_seconds: Annotated[int | None, Crd("activeDeadlineSeconds")] = Field(
        None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description="past this many seconds after its first start (across resumes) the job "
        "is stopped and fails (DeadlineExceeded); omitted: no deadline (a stopped worker is "
        "still detected by its heartbeat)",
    )
    tags: Annotated[dict[str, str], Crd("tags", schema=TAGS_SCHEMA)] = Field(
        default_factory=dict,
        description=f"put on every object version the job uploads (S3 object tags, at most "
        f"{MAX_TAGS}, keys up to {MAX_TAG_KEY} characters), and they become those objects' "
        "tags in the catalog (retention scopes can match them); omitted: none",
    )
    pack_threshold: Annotated[int | None, Crd("packThreshold")] = Field(
        None,
        ge=0,
        le=MAX_PACK_THRESHOLD,
        description="files smaller than this many bytes are stored together in pack objects "
        "(one PUT for many small files); 0: every file its own object; omitted: the "
        "PACK_THRESHOLD_BYTES setting",
    )


class JobResource(BaseModel):
    """What only a BackupJob resource says."""

    claim_name: Annotated[
        str | None,
        MaxLength(253),
        Pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "a PersistentVolumeClaim's name"),
        Crd("source.pvc.claimName"),
    ] = None
    sub_path: Annotated[
        str | None,
        MaxLength(1024),
        Pattern(r"^[^/](.*)$", "a relative path"),
        Crd(
            "source.pvc.subPath",
            more={
                "x-kubernetes-validations": [
                    {
                        "rule": "!self.split('/').exists(p, p == '..')",
                        "message": "subPath must not contain '..'",
                    }
                ],
            },
        ),
    ] = Field(None, description='a directory inside the volume (relative, no "..")')
    path: Annotated[
        str | None, MaxLength(4096), Pattern("^/", "an absolute path"), Crd("source.path")
    ] = Field(None, description="an absolute path already mounted in the operator's pod")
    bucket: Annotated[str, BucketName(), Crd("bucket")] = Field(
        description="S3 bucket name; created (versioned) if missing"
    )
    retention_policy: Annotated[str | None, MaxLength(253), Crd("retentionPolicyRef.name")] = None
    credentials_secret: Annotated[str | None, MaxLength(253), Crd("credentialsSecretRef.name")] = (
        None
    )
    access_key_key: Annotated[str, Crd("credentialsSecretRef.accessKeyKey")] = "accessKey"
    secret_key_key: Annotated[str, Crd("credentialsSecretRef.secretKeyKey")] = "secretKey"
    delete_objects_on_delete: Annotated[bool, Crd("deleteObjectsOnDelete")] = Field(
        False,
        description="on deletion of this resource, delete the object versions only this job "
        "references; default false: the catalog keeps the backup's history",
    )
    resources: Annotated[
        dict[str, Any] | None,
        Crd(
            "resources",
            schema={
                "type": "object",
                "properties": {
                    "limits": {"type": "object", "additionalProperties": QUANTITY},
                    "requests": {"type": "object", "additionalProperties": QUANTITY},
                },
            },
        ),
    ] = Field(None, description="resource requirements of the backup pod (PVC sources)")


CRD_SPEC: JsonSchema = {"required": ["source", "bucket"]}
CRD_OBJECTS: dict[str, JsonSchema] = {
    "source": {
        "description": "What to back up, exactly one of a PersistentVolumeClaim or a path.",
        "oneOf": [{"required": ["pvc"]}, {"required": ["path"]}],
    },
    "source.pvc": {
        "description": "A claim in the job's namespace, mounted read-only in a batch Job.",
        "required": ["claimName"],
    },
    "retentionPolicyRef": {
        "description": "A RetentionPolicy of the same namespace that governs these backups.",
        "required": ["name"],
    },
    "credentialsSecretRef": {
        "description": "A Secret of the same namespace with the object store's credentials, "
        "for the pod that backs up a PVC; omitted, the operator's own are used.",
        "required": ["name"],
    },
}

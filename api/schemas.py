"""Request and response bodies, apart from the ORM models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from ..catalog.models import FileChange, JobStatus, SourceType
from ..catalog.stats import JobStats
from ..specs.backup_job import JobSpec
from ..specs.fields import INT64_MAX as INT64_MAX
from ..specs.fields import Id as Id
from ..specs.retention_policy import PolicySpec

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
# Sizes and counts from 0, within what the catalog's bigint columns hold.
Size = Annotated[int, Interval(ge=0, le=INT64_MAX)]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class In(BaseModel):
    """A request body: a field it does not know is an error, never silently dropped (a
    misspelt `start_time` would otherwise run a job at once)."""

    model_config = ConfigDict(extra="forbid")


class BucketCreate(In):
    name: str = Field(examples=["nightly-backups"], description="S3 bucket name")
    object_lock: bool = Field(False, description="create the bucket with S3 Object Lock enabled")


class BucketOut(Out):
    id: int
    name: str
    object_lock: bool
    namespace: str | None = Field(
        description="the Kubernetes namespace whose resources alone may use it (null: none yet)"
    )
    created_at: datetime


class JobCreate(In, JobSpec):
    job_name: str = Field(min_length=1, max_length=255)
    source_system: str = Field(
        min_length=1,
        description="absolute path of what is backed up (directory jobs: under SOURCE_ROOTS)",
    )
    bucket_id: Id
    source_type: SourceType = Field(
        SourceType.DIRECTORY,
        description="directory: the engine backs up the directory `source_system` on the "
        "worker; registered: files are registered and uploaded through /files",
    )


class JobStatusUpdate(In):
    status: JobStatus
    error: str | None = None


class FailureOut(Out):
    id: int
    path: str
    kind: str = Field(description="unreadable, or changed_while_reading")
    reason: str | None
    created_at: datetime


class JobOut(Out):
    id: int
    job_name: str
    source_system: str
    bucket_id: int
    key_prefix: str
    source_type: SourceType
    rehash: bool
    status: JobStatus
    start_time: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    heartbeat_at: datetime | None
    worker_id: str | None
    attempts: int
    active_deadline_seconds: int | None
    tags: dict[str, str]
    pack_threshold: int | None
    error: str | None = Field(
        description="why it failed; on a resumed job still running, why it was resumed"
    )
    stats: JobStats = Field(description="one shape for directory and registered jobs")
    created_at: datetime
    updated_at: datetime


class FileFields(In):
    path: str = Field(min_length=1, description="path relative to the job's source")
    size: Size
    sha256: str = Field(pattern=SHA256_PATTERN)
    mtime: datetime | None = None


class FileRegister(FileFields):
    job_id: Id


class FileBatch(In):
    job_id: Id
    files: list[FileFields] = Field(min_length=1, max_length=50_000)


class FileOut(Out):
    id: int
    job_id: int
    bucket_id: int
    path: str
    size: int
    sha256: str
    mtime: datetime | None
    change: FileChange
    is_duplicate: bool
    canonical_file_id: int | None
    object_version_id: int | None = Field(
        validation_alias=AliasChoices("stored_version_id", "object_version_id"),
        description="the version holding the content (a duplicate's: its canonical's); "
        "for a packed file, a version of its pack object (under .packs/)",
    )
    pack_offset: int | None = Field(
        validation_alias=AliasChoices("stored_pack_offset", "pack_offset"),
        description="packed files: where the content starts in that pack version (its "
        "length is `size`); null: the version holds this file alone",
    )
    created_at: datetime


class FileStateOut(Out):
    """A file's state in one of the two jobs compared."""

    id: int
    job_id: int = Field(description="the job that recorded this state")
    size: int
    sha256: str
    mtime: datetime | None
    object_version_id: int | None = Field(
        validation_alias=AliasChoices("stored_version_id", "object_version_id"),
        description="the version holding the content",
    )


class DifferenceOut(Out):
    path: str
    change: Literal["added", "changed", "deleted"] = Field(
        description="added: only in the job; deleted: only in the one it is compared "
        "against; changed: in both, with other content or metadata"
    )
    before: FileStateOut | None = Field(description="its state in the job compared against")
    after: FileStateOut | None = Field(description="its state in the job")


class FileRegistered(Out):
    """What a batch registration answers for each file, in the order given."""

    id: int
    path: str
    change: FileChange
    is_duplicate: bool
    canonical_file_id: int | None
    object_version_id: int | None


class DuplicateSummary(BaseModel):
    groups: int
    duplicate_files: int
    bytes_saved: int


class ObjectOut(Out):
    id: int
    bucket_id: int
    key: str
    is_pack: bool = Field(
        description="a pack of small files' contents (under .packs/): the files it holds "
        "list it as their object_version_id, each at its pack_offset"
    )
    created_at: datetime


class VersionOut(Out):
    id: int
    object_id: int
    version_id: str
    size: int
    sha256: str
    etag: str | None
    created_at: datetime
    deleted_at: datetime | None
    deleted_by_policy_id: int | None
    deleted_by_run_id: int | None = None
    deletion_reason: str | None
    lock_mode: str | None = Field(None, description="the S3 Object Lock it was stored under")
    retain_until: datetime | None = None
    legal_hold: bool = False


class LatestOut(ObjectOut):
    latest_version: VersionOut


class TagSet(In):
    tags: dict[str, str] = Field(description="at most 10; keys up to 128, values up to 256 chars")


class PolicyCreate(In, PolicySpec):
    name: str = Field(min_length=1, max_length=253)


def _policy_changes() -> type[BaseModel]:
    """Every field of the spec, optional: omitted is unchanged, null is cleared."""
    fields: dict[str, Any] = {}
    for name, info in PolicyCreate.model_fields.items():
        annotation: Any = info.annotation
        optional = (
            Annotated[(annotation | None, *info.metadata)] if info.metadata else annotation | None
        )
        fields[name] = (optional, Field(None, description=info.description))
    fields["name"] = (str | None, Field(None, min_length=1, max_length=253))
    return create_model("PolicyChanges", __base__=In, **fields)


class PolicyUpdate(_policy_changes()):  # type: ignore[misc]
    @model_validator(mode="after")
    def _no_null_for_what_must_have_a_value(self) -> PolicyUpdate:
        # Omitted: unchanged; null: cleared, which only fields without a value of their
        # own in a new policy (PolicyCreate's default None) can be.
        for name in sorted(self.model_fields_set):
            if getattr(self, name) is None and PolicyCreate.model_fields[name].default is not None:
                raise PydanticCustomError(
                    "null_not_allowed", f"{name} cannot be null; omit it to keep it"
                )
        return self


class PolicyOut(Out, PolicySpec):
    id: int
    name: str
    namespace: str | None = Field(
        description="a RetentionPolicy's namespace: its scope reaches that namespace's buckets only"
    )
    changed_at: datetime = Field(description="when its rules or scope last changed")
    dry_run_at: datetime | None = Field(description="when it was last dry-run")
    created_at: datetime
    updated_at: datetime


class ObjectIds(In):
    object_ids: list[Id] = Field(min_length=1, max_length=10_000)


class Count(BaseModel):
    count: int


class PlannedVersionOut(BaseModel):
    object_id: int
    bucket: str
    key: str
    version: VersionOut
    keep: bool
    reasons: list[str]


class PlannedJobOut(BaseModel):
    job_id: int
    completed_at: datetime
    keep: bool
    reasons: list[str]


class PlanOut(BaseModel):
    policy_id: int
    evaluated_at: datetime
    keep: int
    delete: int
    bytes_to_free: int
    versions: list[PlannedVersionOut]
    jobs: list[PlannedJobOut] = Field(description="target jobs: each job, kept or forgotten")


class ApplyOut(BaseModel):
    policy_id: int
    run_id: int = Field(description="the audit entry: GET /retention-runs/{run_id}")
    forgotten_jobs: list[int]
    deleted: int
    bytes_freed: int
    locked: dict[str, str] = Field(
        description="S3 version id -> the object lock or legal hold that protects it; "
        "never attempted"
    )
    refused: dict[str, str] = Field(description="S3 version id -> why the store refused")
    versions: list[PlannedVersionOut]


class RunOut(Out):
    id: int
    policy_id: int | None
    policy_name: str
    actor: str = Field(description="who ran it: a fingerprint of the API token")
    started_at: datetime
    finished_at: datetime | None = Field(description="null: interrupted")
    error: str | None = Field(
        None, description="what stopped an unfinished run (an outage, or its deadline)"
    )
    kept: int
    deleted: int
    locked: int
    forgotten_jobs: int
    bytes_freed: int
    refused: dict[str, Any]


class RestoreRequest(In):
    target: str = Field(description="directory on the API's host to restore into")
    path: str | None = Field(None, description="only this file")
    prefix: str | None = Field(None, description="only files under this path prefix")
    overwrite: bool = Field(False, description="replace files that exist in the target")


class RestoreOut(BaseModel):
    job_id: int
    target: str
    ok: bool
    files: int
    bytes: int
    refused_existing: int
    refused_paths: list[str]
    failed: int
    failures: dict[str, str]
    seconds: float


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorItem]

"""Typed SQLAlchemy 2 models of the catalog.

Schema changes go through Alembic migrations (backup_operator/migrations);
`tests/test_migrations.py` checks that these models and the migrations agree.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The spec's enums, stored in columns here (re-exported for the catalog's users).
from ..specs.retention_policy import LockMode as LockMode
from ..specs.retention_policy import RetentionTarget as RetentionTarget
from .stats import JobStats, StatsColumn

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

id_pk = Annotated[int, mapped_column(BigInteger, primary_key=True, autoincrement=True)]
created_at = Annotated[datetime, mapped_column(server_default=func.now())]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        int: BigInteger,
    }


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"  # it ran to the end, but some files were not stored
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not JobStatus.PENDING and self is not JobStatus.RUNNING


class SourceType(enum.StrEnum):
    DIRECTORY = "directory"  # the engine walks `source_system`, a directory on the worker
    REGISTERED = "registered"  # files are registered (and uploaded) through the API


class Runner(enum.StrEnum):
    """Who runs a job: which workers may claim it."""

    SCHEDULER = "scheduler"  # any API replica's scheduler
    OPERATOR = "operator"  # the operator itself: the source is a path mounted in it
    KUBERNETES = "kubernetes"  # a batch Job the operator creates (`backup --job ID`)


class FileChange(enum.StrEnum):
    """What a file is in its job, compared with the last completed job of its source."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DELETED = "deleted"  # was in the previous job, is gone now


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=True,
        length=16,
        name=name,
        values_callable=lambda e: [m.value for m in e],
    )


class Bucket(Base):
    __tablename__ = "buckets"

    id: Mapped[id_pk]
    name: Mapped[str] = mapped_column(String(63), unique=True)
    object_lock: Mapped[bool] = mapped_column(server_default=text("false"))
    # The Kubernetes namespace whose resources alone may use it (None: not claimed yet).
    namespace: Mapped[str | None] = mapped_column(String(253))
    created_at: Mapped[created_at]


class Source(Base):
    """What successive backups are of: a bucket, a source, a key prefix, a kind. Its
    completed jobs form a lineage, numbered 1, 2, ... (`head_seq` is the newest)."""

    __tablename__ = "sources"
    __table_args__ = (
        # md5: a source path can be longer than a btree entry may be.
        Index(
            "uq_sources_identity",
            "bucket_id",
            "source_type",
            text("md5(key_prefix)"),
            text("md5(source_system)"),
            unique=True,
        ),
    )

    id: Mapped[id_pk]
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="RESTRICT"))
    source_system: Mapped[str] = mapped_column(Text)
    key_prefix: Mapped[str] = mapped_column(Text)
    source_type: Mapped[SourceType] = mapped_column(_enum(SourceType, "source_type"))
    head_seq: Mapped[int] = mapped_column(server_default=text("0"))
    created_at: Mapped[created_at]


class BackupJob(Base):
    __tablename__ = "backup_jobs"
    __table_args__ = (
        Index(None, "status", "start_time"),
        UniqueConstraint("source_id", "lineage_seq"),
        # Lists a bucket's jobs, and lets files check job, bucket and source with one
        # foreign key.
        UniqueConstraint("bucket_id", "source_id", "id"),
        CheckConstraint(
            "active_deadline_seconds IS NULL OR active_deadline_seconds > 0",
            name="active_deadline_positive",
        ),
    )

    id: Mapped[id_pk]
    job_name: Mapped[str] = mapped_column(String(255))
    source_system: Mapped[str] = mapped_column(Text)
    # RESTRICT: a bucket's history is never dropped implicitly; forced deletion is explicit.
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="RESTRICT"))
    key_prefix: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "status"), server_default=JobStatus.PENDING.value
    )
    source_type: Mapped[SourceType] = mapped_column(
        _enum(SourceType, "source_type"), server_default=SourceType.DIRECTORY.value
    )
    rehash: Mapped[bool] = mapped_column(server_default=text("false"))
    runner: Mapped[Runner] = mapped_column(
        _enum(Runner, "runner"), server_default=Runner.SCHEDULER.value
    )
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    # The completed job of the same source its changes are relative to (set at its start).
    parent_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="SET NULL")
    )
    # Its position in its source's lineage, once it completed: its tree is the file
    # states open at this position.
    lineage_seq: Mapped[int | None]
    # The position after its parent's, reserved at its first start: while no other job
    # of its source completes, its rows are written with it (see lineage.opening_seq).
    reserved_seq: Mapped[int | None]
    # The uid of the Kubernetes resource this job records: registering it is idempotent.
    external_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Where the resource came from (metrics labels): its namespace, its BackupSchedule.
    namespace: Mapped[str | None] = mapped_column(String(253))
    schedule: Mapped[str | None] = mapped_column(String(253))
    # Set when a retention policy forgot the job: its files stay as history, but versions
    # no remaining job references are deleted, and the job is no longer restorable.
    forgotten_at: Mapped[datetime | None]
    forgotten_by_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("retention_runs.id", ondelete="SET NULL")
    )
    start_time: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    # Counted from its first start, across resumes (as a Kubernetes Job's): past it, it fails.
    active_deadline_seconds: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    stats: Mapped[JobStats] = mapped_column(StatsColumn(), server_default=text("'{}'::jsonb"))
    # Content smaller than this many bytes goes into pack objects (0: every file its own
    # object; None: the PACK_THRESHOLD_BYTES setting).
    pack_threshold: Mapped[int | None]
    # Put on every object version the job uploads, in S3 and in the catalog's tags.
    tags: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class JobFailure(Base):
    """A file a job could not back up, and why (the job ends partially failed)."""

    __tablename__ = "job_failures"
    __table_args__ = (Index(None, "job_id", "id"),)

    id: Mapped[id_pk]
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))  # unreadable, changed_while_reading
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]


class JobCredential(Base):
    """A login role of one job's backup pod: row-level security (migration 0023) confines
    it to the job's bucket. Dropped, with its row, when the job ends."""

    __tablename__ = "job_credentials"
    __table_args__ = (Index("ix_job_credentials_job_id", "job_id"),)

    role_name: Mapped[str] = mapped_column(Text, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("backup_jobs.id", ondelete="CASCADE")
    )
    bucket_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[created_at]


# The contents ix_files_large_contents_by_size holds (queries repeat the predicate, so
# that the planner uses it).
SIZES_INDEXED_FROM = 1024 * 1024
LARGE_CONTENTS = f"NOT is_duplicate AND size >= {SIZES_INDEXED_FROM}"


class File(Base):
    """A state of an original file: a path with one content and metadata, opened by the
    job that first saw it (`job_id`) and open until a later job of its source saw it
    change or vanish. A job's tree is the states open at its position in the lineage
    ([first_seq, end_seq)), so an unchanged file costs no row. Duplicates point at the
    canonical file of their content."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("job_id", "path"),
        # A job's tree, paged by id; the states a job closes, by path.
        Index(None, "source_id", "id"),
        # A diff between two positions reads what opened or closed between them.
        Index(None, "source_id", "first_seq"),
        Index(None, "source_id", "end_seq"),
        # Exactly one canonical file per content and bucket: the race arbiter for dedup.
        Index(
            "uq_files_canonical_content",
            "bucket_id",
            "sha256",
            unique=True,
            postgresql_where=text("NOT is_duplicate"),
        ),
        Index(None, "sha256", "id"),
        Index("ix_files_path_prefix", "path", postgresql_ops={"path": "text_pattern_ops"}),
        # A path's states in a source: equality and prefix (LIKE 'p%') searches.
        Index(
            "ix_files_source_path",
            "source_id",
            "path",
            postgresql_ops={"path": "text_pattern_ops"},
        ),
        Index(None, "job_id", "id"),
        # Which canonical file holds a version (reference checks); duplicates resolve
        # through their canonical file, so they stay out of it.
        Index(
            None,
            "object_version_id",
            postgresql_where=text("object_version_id IS NOT NULL AND NOT is_duplicate"),
        ),
        # Whether any content of a size is stored: a large file of another size cannot
        # be a duplicate, so it is uploaded while it is hashed (engine/backup.py).
        Index(
            "ix_files_large_contents_by_size",
            "bucket_id",
            "size",
            postgresql_where=text(LARGE_CONTENTS),
        ),
        Index(
            "ix_files_duplicates_by_canonical",
            "canonical_file_id",
            postgresql_where=text("is_duplicate"),
        ),
        ForeignKeyConstraint(
            ["bucket_id", "source_id", "job_id"],
            ["backup_jobs.bucket_id", "backup_jobs.source_id", "backup_jobs.id"],
            ondelete="CASCADE",
            # (a job that has not started may move to another source: see reschedule)
            onupdate="CASCADE",
            name="fk_files_job_of_bucket_and_source",
        ),
        CheckConstraint("size >= 0", name="size_not_negative"),
        # (not `{64}`: a counted regex costs 3 µs a row, this 0.2)
        CheckConstraint("length(sha256) = 64 AND sha256 ~ '^[0-9a-f]+$'", name="sha256_hex"),
        CheckConstraint(
            "is_duplicate = (canonical_file_id IS NOT NULL)", name="duplicate_has_canonical"
        ),
    )

    id: Mapped[id_pk]
    # One foreign key checks all three: the job exists, and bucket and source are its.
    job_id: Mapped[int]
    bucket_id: Mapped[int]
    source_id: Mapped[int]
    # Lineage positions: from the opening job's (None until it completes) to the one
    # that closed it (exclusive; None: open).
    first_seq: Mapped[int | None]
    end_seq: Mapped[int | None]
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    mtime: Mapped[datetime | None]
    # Exact stat data, compared to skip unchanged files (as restic does with its parent).
    mtime_ns: Mapped[int | None]
    inode: Mapped[int | None]
    # Permission bits (st_mode & 0o7777) when backed up, given back on restore.
    mode: Mapped[int | None] = mapped_column(Integer)
    # The name's bytes when they are not valid UTF-8 (`path` then holds an escaped form).
    raw_path: Mapped[bytes | None]
    change: Mapped[FileChange] = mapped_column(
        _enum(FileChange, "change"), server_default=FileChange.NEW.value
    )
    is_duplicate: Mapped[bool] = mapped_column(server_default=text("false"))
    canonical_file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id"))
    # The stored content: the file's own upload; for a duplicate, a copy of its canonical
    # file's taken at registration (read `stored_version_id`, which is always current).
    object_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("object_versions.id", ondelete="RESTRICT")
    )
    # Where the content starts in that version when it is a pack (None: the whole object).
    pack_offset: Mapped[int | None]
    created_at: Mapped[created_at]

    canonical: Mapped[File | None] = relationship(
        remote_side=lambda: [File.id], lazy="joined", join_depth=1, innerjoin=False
    )

    @property
    def stored_version_id(self) -> int | None:
        """The object version holding this file's content, once it is stored."""
        if self.object_version_id is not None or self.canonical is None:
            return self.object_version_id
        return self.canonical.object_version_id

    @property
    def stored_pack_offset(self) -> int | None:
        """Where the content starts in that version, when it is a pack."""
        return self.pack_offset if self.canonical is None else self.canonical.pack_offset


class BackupObject(Base):
    __tablename__ = "backup_objects"
    __table_args__ = (UniqueConstraint("bucket_id", "key"),)

    id: Mapped[id_pk]
    bucket_id: Mapped[int] = mapped_column(ForeignKey("buckets.id", ondelete="RESTRICT"))
    key: Mapped[str] = mapped_column(Text)
    # A pack of small files' contents (under PACK_PREFIX), not one file's object: its
    # versions go when no kept file references them, never by a versions policy.
    is_pack: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[created_at]


class ObjectVersion(Base):
    __tablename__ = "object_versions"
    __table_args__ = (
        UniqueConstraint("object_id", "version_id"),
        # Serves "latest version of each object" as an index-only probe per object.
        Index(
            "ix_object_versions_live",
            "object_id",
            text("id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(None, "deleted_by_policy_id"),
        CheckConstraint("size >= 0", name="size_not_negative"),
    )

    id: Mapped[id_pk]
    object_id: Mapped[int] = mapped_column(ForeignKey("backup_objects.id", ondelete="CASCADE"))
    # The job that uploaded it: a job's uploads are counted here, once, across attempts.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="SET NULL"), index=True
    )
    version_id: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[created_at]
    deleted_at: Mapped[datetime | None]
    deleted_by_policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("retention_policies.id", ondelete="SET NULL")
    )
    deletion_reason: Mapped[str | None] = mapped_column(Text)
    deleted_by_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("retention_runs.id", ondelete="SET NULL"), index=True
    )
    # The lock the version was stored under (S3 Object Lock), if any.
    lock_mode: Mapped[LockMode | None] = mapped_column(_enum(LockMode, "lock_mode"))
    retain_until: Mapped[datetime | None]
    legal_hold: Mapped[bool] = mapped_column(server_default=text("false"))


class Tag(Base):
    """A tag of one object version, as S3 keeps them. An object's tags are those of its
    latest live version."""

    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("version_id", "key"),
        Index(None, "key", "value"),
    )

    id: Mapped[id_pk]
    # The version's object, repeated: tag searches find objects without a join.
    object_id: Mapped[int] = mapped_column(
        ForeignKey("backup_objects.id", ondelete="CASCADE"), index=True
    )
    version_id: Mapped[int] = mapped_column(ForeignKey("object_versions.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(256))


class RetentionPolicy(Base):
    __tablename__ = "retention_policies"
    __table_args__ = (
        CheckConstraint("keep_last IS NULL OR keep_last >= 1", name="keep_last_positive"),
        CheckConstraint("max_age_days IS NULL OR max_age_days >= 1", name="max_age_positive"),
        CheckConstraint("min_versions IS NULL OR min_versions >= 1", name="min_versions_positive"),
        CheckConstraint(
            "keep_min_successful IS NULL OR keep_min_successful >= 1",
            name="keep_min_successful_positive",
        ),
        CheckConstraint(
            "target = 'versions' OR (bucket_id IS NOT NULL AND source_system IS NOT NULL)",
            name="jobs_target_has_source",
        ),
        CheckConstraint(
            "(lock_mode IS NULL) = (lock_days IS NULL) AND (lock_days IS NULL OR lock_days >= 1)",
            name="lock_mode_has_days",
        ),
    )

    id: Mapped[id_pk]
    name: Mapped[str] = mapped_column(String(253), unique=True)
    # A RetentionPolicy's namespace: its scope reaches that namespace's buckets only.
    namespace: Mapped[str | None] = mapped_column(String(253))
    description: Mapped[str] = mapped_column(Text, server_default="")
    keep_last: Mapped[int | None]
    max_age_days: Mapped[int | None]
    # restic's forget rules (keep_hourly, keep_within_daily, keep_tags, timezone, ...).
    rules: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    min_versions: Mapped[int | None]
    # A cap, restic-style duration (1y2m3d4h): older versions go whatever keeps them,
    # but for the newest min_versions.
    max_age: Mapped[str | None] = mapped_column(String(32))
    target: Mapped[RetentionTarget] = mapped_column(
        _enum(RetentionTarget, "target"), server_default=RetentionTarget.VERSIONS.value
    )
    # Target "jobs": the source (bucket and source_system) whose completed jobs it governs.
    # Target "versions": a scope (bucket, key prefix, tags an object must all carry)
    # governing objects besides those attached one by one.
    bucket_id: Mapped[int | None] = mapped_column(ForeignKey("buckets.id", ondelete="CASCADE"))
    source_system: Mapped[str | None] = mapped_column(Text)
    key_prefix: Mapped[str | None] = mapped_column(Text)
    match_tags: Mapped[dict[str, Any] | None]
    # Immutability of the versions it governs, set when they are stored (lock-enabled
    # buckets only): S3 Object Lock in this mode for this many days, and/or legal hold.
    lock_mode: Mapped[LockMode | None] = mapped_column(_enum(LockMode, "lock_mode"))
    lock_days: Mapped[int | None]
    legal_hold: Mapped[bool] = mapped_column(server_default=text("false"))
    # Jobs target: the newest N successful jobs of the source stay, whatever else says.
    keep_min_successful: Mapped[int | None]
    # A real run needs a dry run after the policy's last change (changed_at).
    require_dry_run: Mapped[bool] = mapped_column(server_default=text("false"))
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    dry_run_at: Mapped[datetime | None]
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ObjectRetention(Base):
    """Which retention policy governs which object."""

    __tablename__ = "object_retention"
    __table_args__ = (Index(None, "policy_id", "object_id"),)

    object_id: Mapped[int] = mapped_column(
        ForeignKey("backup_objects.id", ondelete="CASCADE"), primary_key=True
    )
    policy_id: Mapped[int] = mapped_column(
        ForeignKey("retention_policies.id", ondelete="CASCADE"), primary_key=True
    )
    attached_at: Mapped[created_at]


class RetentionRun(Base):
    """The audit of one real retention run: who, which policy, when, what it deleted
    (the versions whose `deleted_by_run_id` is this run) and the bytes it freed."""

    __tablename__ = "retention_runs"
    __table_args__ = (Index(None, "policy_id", "id"),)

    id: Mapped[id_pk]
    # SET NULL: the audit outlives the policy; its name is kept here.
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("retention_policies.id", ondelete="SET NULL")
    )
    policy_name: Mapped[str] = mapped_column(String(253))
    actor: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[created_at]
    finished_at: Mapped[datetime | None]  # None: interrupted (the next run finishes the work)
    kept: Mapped[int] = mapped_column(server_default=text("0"))
    deleted: Mapped[int] = mapped_column(server_default=text("0"))
    locked: Mapped[int] = mapped_column(server_default=text("0"))
    forgotten_jobs: Mapped[int] = mapped_column(server_default=text("0"))
    bytes_freed: Mapped[int] = mapped_column(server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)  # what stopped an unfinished run
    refused: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))

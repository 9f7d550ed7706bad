"""Create the catalog: buckets, jobs, files, objects, versions, tags, retention.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:17:57.590134
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("object_lock", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_buckets")),
        sa.UniqueConstraint("name", name=op.f("uq_buckets_name")),
    )
    op.create_table(
        "retention_policies",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("keep_last", sa.BigInteger(), nullable=True),
        sa.Column("max_age_days", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "keep_last IS NULL OR keep_last >= 1",
            name=op.f("ck_retention_policies_keep_last_positive"),
        ),
        sa.CheckConstraint(
            "max_age_days IS NULL OR max_age_days >= 1",
            name=op.f("ck_retention_policies_max_age_positive"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_retention_policies_name")),
    )
    op.create_table(
        "backup_jobs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_name", sa.String(length=255), nullable=False),
        sa.Column("source_system", sa.Text(), nullable=False),
        sa.Column("bucket_id", sa.BigInteger(), nullable=False),
        sa.Column("key_prefix", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "running",
                "completed",
                "failed",
                "cancelled",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "stats",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["bucket_id"],
            ["buckets.id"],
            name=op.f("fk_backup_jobs_bucket_id_buckets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_jobs")),
        sa.UniqueConstraint("bucket_id", "id", name=op.f("uq_backup_jobs_bucket_id_id")),
    )
    op.create_index(
        op.f("ix_backup_jobs_status_start_time"),
        "backup_jobs",
        ["status", "start_time"],
        unique=False,
    )
    op.create_table(
        "backup_objects",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("bucket_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["bucket_id"],
            ["buckets.id"],
            name=op.f("fk_backup_objects_bucket_id_buckets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_objects")),
        sa.UniqueConstraint("bucket_id", "key", name=op.f("uq_backup_objects_bucket_id_key")),
    )
    op.create_table(
        "object_retention",
        sa.Column("object_id", sa.BigInteger(), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "attached_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["backup_objects.id"],
            name=op.f("fk_object_retention_object_id_backup_objects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["retention_policies.id"],
            name=op.f("fk_object_retention_policy_id_retention_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("object_id", "policy_id", name=op.f("pk_object_retention")),
    )
    op.create_index(
        op.f("ix_object_retention_policy_id_object_id"),
        "object_retention",
        ["policy_id", "object_id"],
        unique=False,
    )
    op.create_table(
        "object_versions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("object_id", sa.BigInteger(), nullable=False),
        sa.Column("version_id", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_by_policy_id", sa.BigInteger(), nullable=True),
        sa.Column("deletion_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("size >= 0", name=op.f("ck_object_versions_size_not_negative")),
        sa.ForeignKeyConstraint(
            ["deleted_by_policy_id"],
            ["retention_policies.id"],
            name=op.f("fk_object_versions_deleted_by_policy_id_retention_policies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["backup_objects.id"],
            name=op.f("fk_object_versions_object_id_backup_objects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_object_versions")),
        sa.UniqueConstraint(
            "object_id", "version_id", name=op.f("uq_object_versions_object_id_version_id")
        ),
    )
    op.create_index(
        op.f("ix_object_versions_deleted_by_policy_id"),
        "object_versions",
        ["deleted_by_policy_id"],
        unique=False,
    )
    op.create_index(
        "ix_object_versions_live",
        "object_versions",
        ["object_id", sa.literal_column("id DESC")],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("object_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["backup_objects.id"],
            name=op.f("fk_tags_object_id_backup_objects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("object_id", "key", name=op.f("uq_tags_object_id_key")),
    )
    op.create_index(op.f("ix_tags_key_value"), "tags", ["key", "value"], unique=False)
    op.create_table(
        "files",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("bucket_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("mtime", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_duplicate", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("canonical_file_id", sa.BigInteger(), nullable=True),
        sa.Column("object_version_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name=op.f("ck_files_sha256_hex")),
        sa.CheckConstraint(
            "is_duplicate = (canonical_file_id IS NOT NULL)",
            name=op.f("ck_files_duplicate_has_canonical"),
        ),
        sa.CheckConstraint("size >= 0", name=op.f("ck_files_size_not_negative")),
        sa.ForeignKeyConstraint(
            ["bucket_id", "job_id"],
            ["backup_jobs.bucket_id", "backup_jobs.id"],
            name="fk_files_job_of_bucket",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["canonical_file_id"], ["files.id"], name=op.f("fk_files_canonical_file_id_files")
        ),
        sa.ForeignKeyConstraint(
            ["object_version_id"],
            ["object_versions.id"],
            name=op.f("fk_files_object_version_id_object_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("job_id", "path", name=op.f("uq_files_job_id_path")),
    )
    op.create_index(
        "ix_files_duplicates_by_canonical",
        "files",
        ["canonical_file_id"],
        unique=False,
        postgresql_where=sa.text("is_duplicate"),
    )
    op.create_index(
        op.f("ix_files_object_version_id"),
        "files",
        ["object_version_id"],
        unique=False,
        postgresql_where=sa.text("object_version_id IS NOT NULL AND NOT is_duplicate"),
    )
    op.create_index(op.f("ix_files_job_id_id"), "files", ["job_id", "id"], unique=False)
    op.create_index(
        "ix_files_path_prefix",
        "files",
        ["path"],
        unique=False,
        postgresql_ops={"path": "text_pattern_ops"},
    )
    op.create_index(op.f("ix_files_sha256_id"), "files", ["sha256", "id"], unique=False)
    op.create_index(
        "uq_files_canonical_content",
        "files",
        ["bucket_id", "sha256"],
        unique=True,
        postgresql_where=sa.text("NOT is_duplicate"),
    )


def downgrade() -> None:
    for table in (
        "files",
        "tags",
        "object_versions",
        "object_retention",
        "backup_objects",
        "backup_jobs",
        "retention_policies",
        "buckets",
    ):
        op.drop_table(table)

"""Retention of jobs: a policy's target and source, and forgotten jobs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 22:42:58.285841
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "backup_jobs", sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("backup_jobs", sa.Column("forgotten_by_run_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_backup_jobs_forgotten_by_run_id_retention_runs"),
        "backup_jobs",
        "retention_runs",
        ["forgotten_by_run_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.add_column(
        "retention_policies",
        sa.Column(
            "target",
            sa.Enum(
                "versions",
                "jobs",
                name="target",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="versions",
            nullable=False,
        ),
    )
    op.add_column("retention_policies", sa.Column("bucket_id", sa.BigInteger(), nullable=True))
    op.add_column("retention_policies", sa.Column("source_system", sa.Text(), nullable=True))
    op.create_foreign_key(
        op.f("fk_retention_policies_bucket_id_buckets"),
        "retention_policies",
        "buckets",
        ["bucket_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_check_constraint(
        op.f("ck_retention_policies_jobs_target_has_source"),
        "retention_policies",
        "target = 'versions' OR (bucket_id IS NOT NULL AND source_system IS NOT NULL)",
    )
    op.add_column(
        "retention_runs",
        sa.Column("forgotten_jobs", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("retention_runs", "forgotten_jobs")
    op.drop_constraint(
        op.f("fk_retention_policies_bucket_id_buckets"), "retention_policies", type_="foreignkey"
    )
    op.drop_column("retention_policies", "source_system")
    op.drop_column("retention_policies", "bucket_id")
    op.drop_column("retention_policies", "target")
    op.drop_constraint(
        op.f("fk_backup_jobs_forgotten_by_run_id_retention_runs"), "backup_jobs", type_="foreignkey"
    )
    op.drop_column("backup_jobs", "forgotten_by_run_id")
    op.drop_column("backup_jobs", "forgotten_at")

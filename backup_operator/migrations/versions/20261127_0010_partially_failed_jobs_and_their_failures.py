"""Partially failed jobs, and the files each could not back up.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("pending", "running", "completed", "failed", "cancelled")


def _status_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_backup_jobs_status"), "backup_jobs", type_="check")
    listed = ", ".join(f"'{v}'" for v in values)
    op.create_check_constraint(
        op.f("ck_backup_jobs_status"), "backup_jobs", f"status IN ({listed})"
    )


def upgrade() -> None:
    _status_check((*STATUSES, "partially_failed"))
    op.create_table(
        "job_failures",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["backup_jobs.id"],
            name=op.f("fk_job_failures_job_id_backup_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_failures")),
    )
    op.create_index(op.f("ix_job_failures_job_id_id"), "job_failures", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_job_failures_job_id_id"), table_name="job_failures")
    op.drop_table("job_failures")
    op.execute("UPDATE backup_jobs SET status = 'failed' WHERE status = 'partially_failed'")
    _status_check(STATUSES)

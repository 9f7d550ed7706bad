"""Deadlines: a job's activeDeadlineSeconds, and what stopped a retention run.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 02:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "backup_jobs", sa.Column("active_deadline_seconds", sa.BigInteger(), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_backup_jobs_active_deadline_positive"),
        "backup_jobs",
        "active_deadline_seconds IS NULL OR active_deadline_seconds > 0",
    )
    op.add_column("retention_runs", sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("retention_runs", "error")
    op.drop_constraint(op.f("ck_backup_jobs_active_deadline_positive"), "backup_jobs")
    op.drop_column("backup_jobs", "active_deadline_seconds")

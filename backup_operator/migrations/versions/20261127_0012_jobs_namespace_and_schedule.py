"""Jobs: the namespace and BackupSchedule of the resource that made them (metrics labels).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("backup_jobs", sa.Column("namespace", sa.String(length=253), nullable=True))
    op.add_column("backup_jobs", sa.Column("schedule", sa.String(length=253), nullable=True))


def downgrade() -> None:
    op.drop_column("backup_jobs", "schedule")
    op.drop_column("backup_jobs", "namespace")

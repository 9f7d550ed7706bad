"""Jobs of Kubernetes resources: the resource's uid, and who runs the job.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("backup_jobs", sa.Column("external_uid", sa.String(length=64), nullable=True))
    op.create_unique_constraint(
        op.f("uq_backup_jobs_external_uid"), "backup_jobs", ["external_uid"]
    )
    op.add_column(
        "backup_jobs",
        sa.Column(
            "runner",
            sa.Enum(
                "scheduler",
                "operator",
                "kubernetes",
                name="runner",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="scheduler",
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("backup_jobs", "runner")
    op.drop_constraint(op.f("uq_backup_jobs_external_uid"), "backup_jobs", type_="unique")
    op.drop_column("backup_jobs", "external_uid")

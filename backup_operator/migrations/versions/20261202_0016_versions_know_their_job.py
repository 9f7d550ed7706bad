"""Object versions record the job that uploaded them: a resumed job's uploads are
counted once, from the catalog, whatever its attempts did.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("object_versions", sa.Column("job_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_object_versions_job_id_backup_jobs"),
        "object_versions",
        "backup_jobs",
        ["job_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(op.f("ix_object_versions_job_id"), "object_versions", ["job_id"])
    # Existing versions: the job of the canonical file they hold.
    op.execute("""
        UPDATE object_versions v SET job_id = f.job_id
        FROM files f
        WHERE f.object_version_id = v.id AND NOT f.is_duplicate
    """)


def downgrade() -> None:
    op.drop_index(op.f("ix_object_versions_job_id"), table_name="object_versions")
    op.drop_constraint(
        op.f("fk_object_versions_job_id_backup_jobs"), "object_versions", type_="foreignkey"
    )
    op.drop_column("object_versions", "job_id")

"""A job's reserved position: its rows are written with the position it will most likely
take, so that completing it does not rewrite them.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("backup_jobs", sa.Column("reserved_seq", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # A running job's rows may carry its reservation: without the column they are
    # positions of their own, so they go back to having none (as before this revision).
    op.execute("""
        UPDATE files f SET first_seq = NULL, end_seq = NULL
        FROM backup_jobs j WHERE f.job_id = j.id AND j.lineage_seq IS NULL
          AND f.first_seq IS NOT NULL
    """)
    op.drop_column("backup_jobs", "reserved_seq")

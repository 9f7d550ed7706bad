"""Packs: small files' contents stored together in pack objects, each file at an offset.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("pack_offset", sa.BigInteger(), nullable=True))
    op.add_column(
        "backup_objects",
        sa.Column("is_pack", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("backup_jobs", sa.Column("pack_threshold", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("backup_jobs", "pack_threshold")
    op.drop_column("backup_objects", "is_pack")
    op.drop_column("files", "pack_offset")

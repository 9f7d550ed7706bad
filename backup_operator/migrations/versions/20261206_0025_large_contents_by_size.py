"""Stored contents of large files by size: a backup asks whether any stored content has
a file's size, and uploads a file of a size none has while it hashes it (one read).

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_files_large_contents_by_size",
        "files",
        ["bucket_id", "size"],
        postgresql_where=sa.text("NOT is_duplicate AND size >= 1048576"),
    )


def downgrade() -> None:
    op.drop_index("ix_files_large_contents_by_size", table_name="files")

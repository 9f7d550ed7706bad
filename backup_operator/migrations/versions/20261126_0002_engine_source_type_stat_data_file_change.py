"""Backup engine: job source type and rehash; files' stat data, raw name and change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:46:11.172121
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "backup_jobs",
        sa.Column(
            "source_type",
            sa.Enum(
                "directory",
                "registered",
                name="source_type",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="directory",
            nullable=False,
        ),
    )
    op.add_column(
        "backup_jobs",
        sa.Column("rehash", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("files", sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("inode", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("raw_path", sa.LargeBinary(), nullable=True))
    op.add_column(
        "files",
        sa.Column(
            "change",
            sa.Enum(
                "new",
                "changed",
                "unchanged",
                "deleted",
                name="change",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            server_default="new",
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("files", "change")
    op.drop_column("files", "raw_path")
    op.drop_column("files", "inode")
    op.drop_column("files", "mtime_ns")
    op.drop_column("backup_jobs", "rehash")
    op.drop_column("backup_jobs", "source_type")

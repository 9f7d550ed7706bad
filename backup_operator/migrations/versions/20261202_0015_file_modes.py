"""Files keep the permission bits they had when backed up, given back on restore.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("mode", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "mode")

"""Retention: max_age, a cap on how old a kept version may be.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 23:09:01.645635
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("retention_policies", sa.Column("max_age", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("retention_policies", "max_age")

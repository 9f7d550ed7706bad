"""Retention scope for versions: a key prefix and tags an object must carry.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 23:03:01.474166
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("retention_policies", sa.Column("key_prefix", sa.Text(), nullable=True))
    op.add_column(
        "retention_policies",
        sa.Column("match_tags", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("retention_policies", "match_tags")
    op.drop_column("retention_policies", "key_prefix")

"""Retention rules: restic forget rules (JSONB) and min_versions on policies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 22:40:05.478930
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "retention_policies",
        sa.Column(
            "rules",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("retention_policies", sa.Column("min_versions", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_retention_policies_min_versions_positive"),
        "retention_policies",
        "min_versions IS NULL OR min_versions >= 1",
    )


def downgrade() -> None:
    op.drop_column("retention_policies", "min_versions")
    op.drop_column("retention_policies", "rules")

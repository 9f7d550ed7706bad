"""Retention: keep_min_successful, and a dry run required before a real run.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "retention_policies", sa.Column("keep_min_successful", sa.BigInteger(), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_retention_policies_keep_min_successful_positive"),
        "retention_policies",
        "keep_min_successful IS NULL OR keep_min_successful >= 1",
    )
    op.add_column(
        "retention_policies",
        sa.Column("require_dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "retention_policies",
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.add_column(
        "retention_policies", sa.Column("dry_run_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("retention_policies", "dry_run_at")
    op.drop_column("retention_policies", "changed_at")
    op.drop_column("retention_policies", "require_dry_run")
    op.drop_constraint(
        op.f("ck_retention_policies_keep_min_successful_positive"), "retention_policies", "check"
    )
    op.drop_column("retention_policies", "keep_min_successful")

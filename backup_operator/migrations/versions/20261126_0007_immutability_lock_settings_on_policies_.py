"""Immutability: object-lock settings on policies, lock state on versions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 23:05:37.304817
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "object_versions",
        sa.Column(
            "lock_mode",
            sa.Enum(
                "GOVERNANCE",
                "COMPLIANCE",
                name="lock_mode",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=True,
        ),
    )
    op.add_column(
        "object_versions", sa.Column("retain_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "object_versions",
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "retention_policies",
        sa.Column(
            "lock_mode",
            sa.Enum(
                "GOVERNANCE",
                "COMPLIANCE",
                name="lock_mode",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=True,
        ),
    )
    op.add_column("retention_policies", sa.Column("lock_days", sa.BigInteger(), nullable=True))
    op.add_column(
        "retention_policies",
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_retention_policies_lock_mode_has_days"),
        "retention_policies",
        "(lock_mode IS NULL) = (lock_days IS NULL) AND (lock_days IS NULL OR lock_days >= 1)",
    )


def downgrade() -> None:
    op.drop_column("retention_policies", "legal_hold")
    op.drop_column("retention_policies", "lock_days")
    op.drop_column("retention_policies", "lock_mode")
    op.drop_column("object_versions", "legal_hold")
    op.drop_column("object_versions", "retain_until")
    op.drop_column("object_versions", "lock_mode")

"""Retention audit: one row per real run, and the run that deleted each version.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:29:43.463329
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retention_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=True),
        sa.Column("policy_name", sa.String(length=253), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kept", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("deleted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "refused",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["retention_policies.id"],
            name=op.f("fk_retention_runs_policy_id_retention_policies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_runs")),
    )
    op.create_index(
        op.f("ix_retention_runs_policy_id_id"), "retention_runs", ["policy_id", "id"], unique=False
    )
    op.add_column("object_versions", sa.Column("deleted_by_run_id", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_object_versions_deleted_by_run_id"),
        "object_versions",
        ["deleted_by_run_id"],
        unique=False,
    )
    op.create_foreign_key(
        op.f("fk_object_versions_deleted_by_run_id_retention_runs"),
        "object_versions",
        "retention_runs",
        ["deleted_by_run_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_object_versions_deleted_by_run_id_retention_runs"),
        "object_versions",
        type_="foreignkey",
    )
    op.drop_index(op.f("ix_object_versions_deleted_by_run_id"), table_name="object_versions")
    op.drop_column("object_versions", "deleted_by_run_id")
    op.drop_index(op.f("ix_retention_runs_policy_id_id"), table_name="retention_runs")
    op.drop_table("retention_runs")

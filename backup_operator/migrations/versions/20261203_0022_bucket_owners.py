"""Buckets belong to a namespace: the first namespace whose BackupJob or RetentionPolicy
uses a bucket through the operator owns it, and no other namespace's resources may back
up into it or govern it. A policy made by a resource governs only its namespace's buckets.
Buckets and policies made through the API or the CLI (the platform's) have no owner until
a namespace claims them.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03 15:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("buckets", sa.Column("namespace", sa.String(253), nullable=True))
    op.add_column("retention_policies", sa.Column("namespace", sa.String(253), nullable=True))


def downgrade() -> None:
    op.drop_column("retention_policies", "namespace")
    op.drop_column("buckets", "namespace")

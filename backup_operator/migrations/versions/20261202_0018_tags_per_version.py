"""Tags per object version, as S3 keeps them: an object's tags are its latest live
version's. Existing tags were those of each object's latest version: they go there.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tags", sa.Column("version_id", sa.BigInteger(), nullable=True))
    op.execute("""
        UPDATE tags t SET version_id = (
            SELECT v.id FROM object_versions v
            WHERE v.object_id = t.object_id
            ORDER BY v.deleted_at IS NULL DESC, v.id DESC LIMIT 1)
    """)
    op.execute("DELETE FROM tags WHERE version_id IS NULL")  # an object with no version
    op.alter_column("tags", "version_id", nullable=False)
    op.create_foreign_key(
        op.f("fk_tags_version_id_object_versions"),
        "tags",
        "object_versions",
        ["version_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint(op.f("uq_tags_object_id_key"), "tags", type_="unique")
    op.create_unique_constraint(op.f("uq_tags_version_id_key"), "tags", ["version_id", "key"])
    op.create_index(op.f("ix_tags_object_id"), "tags", ["object_id"])


def downgrade() -> None:
    # Each object keeps the tags of its latest version that has any.
    op.execute("""
        DELETE FROM tags t USING tags newer
        WHERE newer.object_id = t.object_id AND newer.version_id > t.version_id
    """)
    op.drop_index(op.f("ix_tags_object_id"), table_name="tags")
    op.drop_constraint(op.f("uq_tags_version_id_key"), "tags", type_="unique")
    op.create_unique_constraint(op.f("uq_tags_object_id_key"), "tags", ["object_id", "key"])
    op.drop_constraint(op.f("fk_tags_version_id_object_versions"), "tags", type_="foreignkey")
    op.drop_column("tags", "version_id")

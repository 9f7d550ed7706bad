"""A catalog that grows with change: file states open over a range of a source's lineage.

Jobs belong to a source (bucket, source, key prefix, kind); completed jobs are numbered
in their source's lineage in the order they completed. A `files` row becomes a state:
open from the position of the job that recorded it to the one that saw it change or
vanish. The rows of an unchanged file that successive completed jobs repeated are
folded into the first; nothing a job's tree held is lost (the downgrade writes them
out again).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCE_TYPE = sa.Enum(
    "directory",
    "registered",
    name="source_type",
    native_enum=False,
    create_constraint=True,
    length=16,
)


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("bucket_id", sa.BigInteger(), nullable=False),
        sa.Column("source_system", sa.Text(), nullable=False),
        sa.Column("key_prefix", sa.Text(), nullable=False),
        sa.Column("source_type", SOURCE_TYPE, nullable=False),
        sa.Column("head_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["bucket_id"],
            ["buckets.id"],
            name=op.f("fk_sources_bucket_id_buckets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
    )
    op.create_index(
        "uq_sources_identity",
        "sources",
        ["bucket_id", "source_type", sa.text("md5(key_prefix)"), sa.text("md5(source_system)")],
        unique=True,
    )
    op.add_column("backup_jobs", sa.Column("source_id", sa.BigInteger(), nullable=True))
    op.add_column("backup_jobs", sa.Column("parent_job_id", sa.BigInteger(), nullable=True))
    op.add_column("backup_jobs", sa.Column("lineage_seq", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("source_id", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("first_seq", sa.BigInteger(), nullable=True))
    op.add_column("files", sa.Column("end_seq", sa.BigInteger(), nullable=True))

    op.execute("""
        INSERT INTO sources (bucket_id, source_system, key_prefix, source_type)
        SELECT DISTINCT bucket_id, source_system, key_prefix, source_type FROM backup_jobs
    """)
    op.execute("""
        UPDATE backup_jobs j SET source_id = s.id FROM sources s
        WHERE s.bucket_id = j.bucket_id AND s.source_system = j.source_system
          AND s.key_prefix = j.key_prefix AND s.source_type = j.source_type
    """)
    op.execute("""
        UPDATE backup_jobs j SET parent_job_id = p.id FROM backup_jobs p
        WHERE j.stats->>'parent_job_id' ~ '^[0-9]+$'
          AND p.id = (j.stats->>'parent_job_id')::bigint AND p.source_id = j.source_id
    """)
    op.execute("""
        UPDATE backup_jobs j SET lineage_seq = n.seq FROM (
            SELECT id, row_number() OVER (PARTITION BY source_id
                                          ORDER BY completed_at NULLS FIRST, id) AS seq
            FROM backup_jobs WHERE status = 'completed') n
        WHERE n.id = j.id
    """)
    op.execute("""
        UPDATE sources s SET head_seq = m.seq
        FROM (SELECT source_id, max(lineage_seq) AS seq FROM backup_jobs GROUP BY source_id) m
        WHERE m.source_id = s.id AND m.seq IS NOT NULL
    """)
    op.execute("""
        UPDATE files f SET source_id = j.source_id,
                           first_seq = j.lineage_seq,
                           end_seq = CASE WHEN f.change = 'deleted' THEN j.lineage_seq + 1 END
        FROM backup_jobs j WHERE j.id = f.job_id
    """)
    # Fold the repeated rows of a lineage: a row that has the very same state as the one
    # of its path at the position before continues it. Each run of such rows keeps one
    # row (its canonical one, if it holds one) spanning the run, with the first's job
    # and change.
    op.execute("""
        CREATE TEMP TABLE runs ON COMMIT DROP AS
        WITH ordered AS (
            SELECT f.id, f.source_id, f.path, f.first_seq, f.job_id, f.change, f.is_duplicate,
                   f.created_at,
                   CASE WHEN lag(f.first_seq) OVER w = f.first_seq - 1
                         AND f.change <> 'deleted' AND lag(f.change) OVER w <> 'deleted'
                         AND (lag(f.sha256) OVER w, lag(f.size) OVER w) = (f.sha256, f.size)
                         AND lag(f.mtime_ns) OVER w IS NOT DISTINCT FROM f.mtime_ns
                         AND lag(f.inode) OVER w IS NOT DISTINCT FROM f.inode
                         AND lag(f.mode) OVER w IS NOT DISTINCT FROM f.mode
                         AND lag(f.raw_path) OVER w IS NOT DISTINCT FROM f.raw_path
                        THEN 0 ELSE 1 END AS starts
            FROM files f WHERE f.first_seq IS NOT NULL
            WINDOW w AS (PARTITION BY f.source_id, f.path ORDER BY f.first_seq)
        ), numbered AS (
            SELECT *, sum(starts) OVER (PARTITION BY source_id, path ORDER BY first_seq) AS run
            FROM ordered
        )
        SELECT n.id, n.source_id, n.path, n.run, n.first_seq, n.job_id, n.change,
               n.is_duplicate, n.created_at,
               first_value(n.id) OVER r AS first_id,
               min(n.first_seq) OVER r AS run_first,
               max(n.first_seq) OVER r AS run_last,
               count(*) OVER r AS run_rows,
               coalesce(min(n.id) FILTER (WHERE NOT n.is_duplicate) OVER r,
                        first_value(n.id) OVER r) AS keeper
        FROM numbered n
        WINDOW r AS (PARTITION BY n.source_id, n.path, n.run ORDER BY n.first_seq
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
    """)
    op.execute("DELETE FROM runs WHERE run_rows = 1")
    op.execute("CREATE INDEX ON runs (id)")
    op.execute("ANALYZE runs")
    # Duplicates of a row that goes point at the one that stays.
    op.execute("""
        UPDATE files f SET canonical_file_id = r.keeper
        FROM runs r WHERE f.canonical_file_id = r.id AND r.id <> r.keeper
    """)
    op.execute("""
        CREATE TEMP TABLE keepers ON COMMIT DROP AS
        SELECT DISTINCT r.keeper AS id, r.run_first, r.run_last, f.job_id, f.change, f.created_at
        FROM runs r JOIN files f ON f.id = r.first_id
    """)
    op.execute("DELETE FROM files f USING runs r WHERE f.id = r.id AND r.id <> r.keeper")
    op.execute("""
        UPDATE files f SET first_seq = k.run_first, job_id = k.job_id, change = k.change,
                           created_at = k.created_at
        FROM keepers k WHERE f.id = k.id
    """)
    # Every state ends after its last position, unless that is its source's newest.
    op.execute("""
        UPDATE files f SET end_seq = r.run_last + 1
        FROM (SELECT DISTINCT keeper, run_last FROM runs) r
        WHERE f.id = r.keeper
    """)
    op.execute("""
        UPDATE files f SET end_seq = f.first_seq + 1
        WHERE f.first_seq IS NOT NULL AND f.end_seq IS NULL
          AND f.id NOT IN (SELECT keeper FROM runs)
    """)
    op.execute("""
        UPDATE files f SET end_seq = NULL FROM sources s
        WHERE s.id = f.source_id AND f.change <> 'deleted' AND f.end_seq = s.head_seq + 1
    """)

    op.alter_column("backup_jobs", "source_id", nullable=False)
    op.alter_column("files", "source_id", nullable=False)
    op.create_foreign_key(
        op.f("fk_backup_jobs_source_id_sources"),
        "backup_jobs",
        "sources",
        ["source_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.create_foreign_key(
        op.f("fk_backup_jobs_parent_job_id_backup_jobs"),
        "backup_jobs",
        "backup_jobs",
        ["parent_job_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_unique_constraint(
        op.f("uq_backup_jobs_source_id_lineage_seq"), "backup_jobs", ["source_id", "lineage_seq"]
    )
    op.create_foreign_key(
        op.f("fk_files_source_id_sources"),
        "files",
        "sources",
        ["source_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(
        "ix_files_source_path",
        "files",
        ["source_id", "path"],
        postgresql_ops={"path": "text_pattern_ops"},
    )
    op.create_index(op.f("ix_files_source_id_id"), "files", ["source_id", "id"])
    op.create_index(op.f("ix_files_source_id_first_seq"), "files", ["source_id", "first_seq"])
    op.create_index(op.f("ix_files_source_id_end_seq"), "files", ["source_id", "end_seq"])
    op.execute("ANALYZE files")


def downgrade() -> None:
    # Every completed job gets back a row for each file of its tree it did not record.
    op.execute("""
        INSERT INTO files (job_id, bucket_id, source_id, path, size, sha256, mtime, mtime_ns,
                           inode, raw_path, change, mode, is_duplicate, canonical_file_id,
                           object_version_id)
        SELECT j.id, f.bucket_id, f.source_id, f.path, f.size, f.sha256, f.mtime, f.mtime_ns,
               f.inode, f.raw_path, 'unchanged', f.mode, true,
               coalesce(f.canonical_file_id, f.id), f.object_version_id
        FROM backup_jobs j
        JOIN files f ON f.source_id = j.source_id AND f.first_seq <= j.lineage_seq
                    AND (f.end_seq IS NULL OR f.end_seq > j.lineage_seq)
        WHERE j.lineage_seq IS NOT NULL AND f.job_id <> j.id AND f.change <> 'deleted'
    """)
    op.drop_index(op.f("ix_files_source_id_end_seq"), table_name="files")
    op.drop_index(op.f("ix_files_source_id_first_seq"), table_name="files")
    op.drop_index(op.f("ix_files_source_id_id"), table_name="files")
    op.drop_index("ix_files_source_path", table_name="files")
    op.drop_constraint(op.f("fk_files_source_id_sources"), "files", type_="foreignkey")
    op.drop_constraint(op.f("uq_backup_jobs_source_id_lineage_seq"), "backup_jobs", type_="unique")
    op.drop_constraint(
        op.f("fk_backup_jobs_parent_job_id_backup_jobs"), "backup_jobs", type_="foreignkey"
    )
    op.drop_constraint(op.f("fk_backup_jobs_source_id_sources"), "backup_jobs", type_="foreignkey")
    op.drop_column("files", "end_seq")
    op.drop_column("files", "first_seq")
    op.drop_column("files", "source_id")
    op.drop_column("backup_jobs", "lineage_seq")
    op.drop_column("backup_jobs", "parent_job_id")
    op.drop_column("backup_jobs", "source_id")
    op.drop_index("uq_sources_identity", table_name="sources")
    op.drop_table("sources")

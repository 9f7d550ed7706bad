"""Backup pods log in with a role of their own job: row-level security confines a role
listed in job_credentials to its job's bucket (and, for writes to jobs, its own job), so
that the catalog's URL never leaves the operator's namespace. Roles not listed (the
platform's: API, operator, CLI) see everything as before; table owners bypass it anyway.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03 15:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUCKET = "(SELECT catalog_agent_bucket())"
JOB = "(SELECT catalog_agent_job())"
OBJECTS = f"(SELECT id FROM backup_objects WHERE bucket_id = {BUCKET})"
# What a job's role may reach, per table: (commands, rows).
AGENT_RULES: dict[str, list[tuple[str, str]]] = {
    "buckets": [("SELECT", f"id = {BUCKET}")],
    "backup_jobs": [("SELECT", f"bucket_id = {BUCKET}"), ("UPDATE", f"id = {JOB}")],
    "job_failures": [("ALL", f"job_id = {JOB}")],
    "sources": [("ALL", f"bucket_id = {BUCKET}")],
    "files": [("ALL", f"bucket_id = {BUCKET}")],
    "backup_objects": [("ALL", f"bucket_id = {BUCKET}")],
    "object_versions": [("ALL", f"object_id IN {OBJECTS}")],
    "tags": [("ALL", f"object_id IN {OBJECTS}")],
    "object_retention": [("ALL", f"object_id IN {OBJECTS}")],
    "retention_policies": [("SELECT", f"bucket_id IS NULL OR bucket_id = {BUCKET}")],
    "retention_runs": [],
}


def upgrade() -> None:
    op.create_table(
        "job_credentials",
        sa.Column("role_name", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("bucket_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["backup_jobs.id"],
            name=op.f("fk_job_credentials_job_id_backup_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_name", name=op.f("pk_job_credentials")),
    )
    op.create_index("ix_job_credentials_job_id", "job_credentials", ["job_id"])
    # session_user: inside SECURITY DEFINER, current_user is the definer.
    for name, column in (("catalog_agent_bucket", "bucket_id"), ("catalog_agent_job", "job_id")):
        op.execute(f"""
            CREATE FUNCTION {name}() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER
            SET search_path = pg_catalog, public AS $$
                SELECT {column} FROM job_credentials WHERE role_name = session_user
            $$
        """)
    for table, rules in AGENT_RULES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY platform ON {table} USING ({BUCKET} IS NULL)"
            f" WITH CHECK ({BUCKET} IS NULL)"
        )
        for number, (command, rows) in enumerate(rules):
            check = "" if command == "SELECT" else f" WITH CHECK ({rows})"
            op.execute(
                f"CREATE POLICY agent_{number} ON {table} FOR {command} USING ({rows}){check}"
            )


def downgrade() -> None:
    for table, rules in AGENT_RULES.items():
        op.execute(f"DROP POLICY platform ON {table}")
        for number in range(len(rules)):
            op.execute(f"DROP POLICY agent_{number} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION catalog_agent_bucket()")
    op.execute("DROP FUNCTION catalog_agent_job()")
    op.execute("DROP TABLE job_credentials")

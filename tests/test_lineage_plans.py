"""No plan depends on luck: with a 100,000-file source whose newest rows were never
analysed (autovacuum off), the statements a backup runs over the catalog keep linear
plans — no nested loop over a sequential scan (what made recording deletions run for
15 minutes instead of 13 s)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs, lineage
from backup_operator.catalog.models import File
from backup_operator.services.buckets import create_bucket
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore

from .conftest import plain

FILES = 100_000


def quadratic(plan: dict[str, Any]) -> list[str]:
    """Nested loops whose inner side scans a table sequentially: cost rows x rows."""
    found = []
    children = plan.get("Plans", [])
    if plan["Node Type"] == "Nested Loop" and len(children) == 2:
        inner = children[1]
        while inner["Node Type"] in ("Materialize", "Memoize") and inner.get("Plans"):
            inner = inner["Plans"][0]
        if inner["Node Type"] == "Seq Scan":
            found.append(f"nested loop over a seq scan of {inner.get('Relation Name')}")
    for child in children:
        found += quadratic(child)
    return found


def plan_of(session: Session, statement: Any, params: dict[str, Any] | None = None) -> dict:
    compiled = statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    sql = str(compiled) if params is None else statement.text
    rows = session.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params or {}).scalar_one()
    return json.loads(rows)[0]["Plan"] if isinstance(rows, str) else rows[0]["Plan"]


def fabricate(session: Session, job_id: int, change: str, suffix: str = "") -> None:
    """FILES rows for the job, as a backup would record them (each its own content)."""
    job = jobs.get_job(session, job_id)
    session.execute(
        text("""
            INSERT INTO files (job_id, bucket_id, source_id, path, size, sha256, change, mode,
                               is_duplicate)
            SELECT :job, :bucket, :source, 'dir' || (i % 100) || '/file' || i, 10,
                   encode(sha256((i || :suffix)::bytea), 'hex'), :change, 420, false
            FROM generate_series(1, :n) AS i
        """),
        {
            "job": job_id,
            "bucket": job.bucket_id,
            "source": job.source_id,
            "n": FILES,
            "change": change,
            "suffix": suffix,
        },
    )


def test_a_backups_statements_keep_linear_plans_with_stale_statistics(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_name: str, db_url: str
) -> None:
    with psycopg.connect(plain(db_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE files SET (autovacuum_enabled = false)")
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        first = jobs.create_job(session, job_name="a", source_system="/big", bucket_id=bucket.id)
        jobs.claim_job(session, first.id, worker_id="w")
        fabricate(session, first.id, "new")
        session.commit()
        assert jobs.finish_job(session, first.id, worker_id="w", status=jobs.JobStatus.COMPLETED)
        session.execute(text("ANALYZE files"))  # statistics know the first job only
        session.commit()

        second = jobs.create_job(session, job_name="b", source_system="/big", bucket_id=bucket.id)
        jobs.claim_job(session, second.id, worker_id="w")
        second.parent_job_id = first.id
        fabricate(session, second.id, "changed", suffix="v2")  # every file changed
        session.commit()
        parent = lineage.tree_at(first.source_id, 1)
        paths = [f"dir{i % 100}/file{i}" for i in range(1, 1001)]
        plans = {
            "parent lookup": plan_of(session, select(File.id).where(parent, File.path.in_(paths))),
            "first page of a tree": plan_of(
                session,
                select(File)
                .where(lineage.tree_at(first.source_id, 1))
                .order_by(File.id)
                .limit(101),
            ),
            "closing the replaced states": plan_of(
                session,
                lineage.CLOSE_REPLACED,
                {"job": second.id, "source": second.source_id, "seq": 2},
            ),
        }
        session.execute(text("CREATE TEMP TABLE seen (id bigint PRIMARY KEY) ON COMMIT DROP"))
        session.execute(
            text("INSERT INTO seen SELECT id FROM files WHERE job_id = :j"), {"j": first.id}
        )
        session.execute(text("ANALYZE seen"))
        plans["recording deletions"] = plan_of(
            session, lineage.deletions_since(second.id, second.source_id, 1)
        )
        session.rollback()
        problems = {name: quadratic(plan) for name, plan in plans.items()}
        assert all(not found for found in problems.values()), problems

        # And they run: the job joins the lineage, its tree is its own 100,000 states.
        assert jobs.finish_job(session, second.id, worker_id="w", status=jobs.JobStatus.COMPLETED)
        second = jobs.get_job(session, second.id)
        in_second = select(func.count()).select_from(File).where(lineage.in_tree(session, second))
        assert session.scalar(in_second) == FILES
        assert (
            session.scalar(select(func.count()).select_from(File).where(File.end_seq == 2)) == FILES
        )

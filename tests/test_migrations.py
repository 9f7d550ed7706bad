"""Alembic: upgrade from empty, downgrade to empty, and the models match the migrations."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.orm import Session

from backup_operator.catalog.models import BackupJob, Base
from backup_operator.migrate import downgrade, upgrade

TABLES = {
    "buckets",
    "backup_jobs",
    "files",
    "backup_objects",
    "object_versions",
    "tags",
    "retention_policies",
    "object_retention",
}


def test_migrations_match_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_then_upgrade(db_url: str) -> None:
    engine = create_engine(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    downgrade(db_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    columns = {c["name"]: c for c in inspect(engine).get_columns("backup_jobs")}
    assert columns["created_at"]["type"].timezone is True
    engine.dispose()


HISTORY = Path(__file__).parent / "data" / "catalog_0016.json"
# Parents before children: the order the rows can be put back in.
TABLE_ORDER = [
    "buckets",
    "retention_policies",
    "retention_runs",
    "backup_jobs",
    "backup_objects",
    "object_versions",
    "files",
    "tags",
    "object_retention",
    "job_failures",
]


def listings(url: str, job_ids: list[int]) -> dict[str, list[list[object]]]:
    from backup_operator.catalog.files import list_files
    from backup_operator.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        found = {}
        for job_id in job_ids:
            page = list_files(session, job_id=job_id, after=None, limit=1000)
            found[str(job_id)] = sorted(
                [f.path, f.sha256, f.size, f.change.value, f.mode] for f in page.items
            )
    engine.dispose()
    return found


def test_a_catalog_with_history_is_converted_without_losing_anything(db_url: str) -> None:
    """tests/data/catalog_0016.json: a catalog written by the code of revision 0016
    (commit ad8f229) — four backups of one source (a change, a deletion, a duplicate,
    a file whose metadata alone changed, an unchanged run), the first two forgotten by a
    jobs policy, a registered job — and each job's file listing as that code gave it."""
    history = json.loads(HISTORY.read_text())
    downgrade(db_url, "base")
    upgrade(db_url, history["revision"])
    engine = create_engine(db_url)
    with engine.begin() as connection:
        for table in TABLE_ORDER:
            connection.execute(
                text(
                    f"INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, :rows)"
                ),
                {"rows": json.dumps(history["tables"][table])},
            )
            if table != "object_retention":  # the others' ids go on after those loaded
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                    )
                )
    rows_before = len(history["tables"]["files"])
    upgrade(db_url)

    job_ids = sorted(history["jobs"].values())
    assert listings(db_url, job_ids) == history["listings"]
    with engine.connect() as connection:
        rows_after = connection.execute(text("SELECT count(*) FROM files")).scalar_one()
        seqs = dict(connection.execute(text("SELECT id, lineage_seq FROM backup_jobs")).all())
    # The unchanged files the later jobs repeated are one row each now.
    assert rows_after < rows_before
    jobs = history["jobs"]
    assert [seqs[jobs[name]] for name in ("first", "second", "third", "fourth")] == [1, 2, 3, 4]

    downgrade(db_url, history["revision"])  # and back: every job's rows written out again
    with engine.connect() as connection:
        per_job = connection.execute(
            text("SELECT job_id, count(*) FROM files GROUP BY job_id ORDER BY job_id")
        ).all()
    assert {str(job): n for job, n in per_job} == {
        job: len(listing) for job, listing in history["listings"].items()
    }
    engine.dispose()


def test_job_statistics_of_both_kinds_end_in_one_shape_and_go_back(db_url: str) -> None:
    """Revision 0026: a registered job's `files`/`duplicates` become the directory jobs'
    `files_seen`/`duplicate`; downgraded, each row says what it said before."""
    registered = {"files": 2, "duplicates": 1, "pending_upload": 1, "bytes": 6, "bytes_saved": 3}
    walked = {"files_seen": 5, "new": 4, "duplicate": 1, "unchanged": 1, "uploads": 3}
    downgrade(db_url, "base")
    upgrade(db_url, "0025")
    engine = create_engine(db_url)
    with engine.begin() as connection:
        bucket = connection.execute(
            text("INSERT INTO buckets (name) VALUES ('stats') RETURNING id")
        ).scalar_one()
        for name, kind, stats in [("r", "registered", registered), ("d", "directory", walked)]:
            source = connection.execute(
                text(
                    "INSERT INTO sources (bucket_id, source_type, key_prefix, source_system)"
                    " VALUES (:bucket, :kind, '', :name) RETURNING id"
                ),
                {"bucket": bucket, "kind": kind, "name": name},
            ).scalar_one()
            connection.execute(
                text(
                    "INSERT INTO backup_jobs (job_name, source_system, bucket_id, source_type,"
                    " source_id, status, stats) VALUES (:name, :path, :bucket, :kind, :source,"
                    " 'completed', CAST(:stats AS jsonb))"
                ),
                {
                    "name": name,
                    "path": name,
                    "bucket": bucket,
                    "kind": kind,
                    "source": source,
                    "stats": json.dumps(stats),
                },
            )
    upgrade(db_url)
    with Session(engine) as session:
        by_name = {job.job_name: job.stats for job in session.scalars(select(BackupJob))}
    assert (by_name["r"].files_seen, by_name["r"].duplicate, by_name["r"].pending_upload) == (
        2,
        1,
        1,
    )
    assert (by_name["d"].files_seen, by_name["d"].duplicate, by_name["d"].new) == (5, 1, 4)
    assert by_name["r"].version == by_name["d"].version == 2

    downgrade(db_url, "0025")
    with engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT job_name, stats FROM backup_jobs")).all())
    assert rows["r"] == registered
    assert {key: rows["d"][key] for key in walked} == walked and "version" not in rows["d"]
    engine.dispose()

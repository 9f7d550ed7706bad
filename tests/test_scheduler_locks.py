"""A running backup holds no transaction open in the catalog: a schema change (what a
migration does) completes while it runs, and the job's times are those of its run; a
short database outage at its end or in its middle is waited out, not paid for with an
attempt."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import migrated_catalog, plain, write
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.catalog.models import BackupJob
from backup_operator.catalog.stats import JobStats
from backup_operator.db import make_engine, make_sessionmaker
from backup_operator.embedded import EmbeddedPostgres
from backup_operator.engine.backup import Options
from backup_operator.services.buckets import create_bucket
from backup_operator.services.runner import EngineRunner
from backup_operator.services.scheduler import Scheduler
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore


def test_a_schema_change_completes_while_a_backup_runs(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    db_url: str,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    for i in range(3000):
        write(tmp_path / "src", f"d{i % 30}/f{i}", f"{i}".encode() * 200)
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        # One object per file (no packs) keeps the backup running well past its first
        # batch, so the schema change meets it under way even on a loaded machine.
        job_id = jobs.create_job(
            session,
            job_name="big",
            source_system=str(tmp_path / "src"),
            bucket_id=bucket.id,
            pack_threshold=0,
        ).id
    scheduler = Scheduler(sessions, runner=EngineRunner(sessions, store))
    runner = threading.Thread(target=scheduler.run_once)
    runner.start()
    try:
        with psycopg.connect(plain(db_url), autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while (
                conn.execute("SELECT count(*) FROM files WHERE job_id = %s", (job_id,)).fetchone()[
                    0
                ]
                == 0
            ):
                assert time.monotonic() < deadline, "the backup did not start"
                time.sleep(0.05)
            # A transaction held across uploads (seconds); not the gaps between the
            # statements of one batch's transaction, which a sample can also catch.
            idle = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND now() - state_change > '1 second'"
            ).fetchone()[0]
            conn.execute("SET lock_timeout = '5s'")
            conn.execute("ALTER TABLE backup_jobs ADD COLUMN during_backup integer")
            assert runner.is_alive(), "the backup ended before the schema change: make it longer"
    finally:
        runner.join(120)
    assert idle == 0
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert job.status.value == "completed"
        assert job.started_at is not None and job.completed_at is not None
        took = (job.completed_at - job.started_at).total_seconds()
    assert took > 0.5, f"completed_at is the claim's time, not the end's ({took:.3f}s)"


def test_a_database_outage_at_a_jobs_end_neither_spends_an_attempt_nor_leaves_it_running(
    private_pg: EmbeddedPostgres, store: ObjectStore, bucket_name: str
) -> None:
    url = migrated_catalog(private_pg)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        job_id = jobs.create_job(session, job_name="j", source_system="/x", bucket_id=bucket.id).id

    def ends_during_an_outage(session: Session, job: BackupJob, heartbeat: Any) -> JobStats:
        private_pg.stop()  # the database goes away just as the work is done…
        threading.Timer(3, private_pg.start).start()  # …for 3 s, under the 60 s timeout
        return JobStats()

    Scheduler(sessions, runner=ends_during_an_outage, heartbeat_timeout=60).run_once()
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert (job.status.value, job.attempts) == ("completed", 1)
    engine.dispose()


# 60 files in batches of 10: progress is told after each batch, then once at the end.
@pytest.mark.parametrize("after_batches", [2, 7], ids=["mid-backup", "at-its-end"])
def test_a_database_outage_mid_backup_is_waited_out_and_counted_once(
    after_batches: int,
    private_pg: EmbeddedPostgres,
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    url = migrated_catalog(private_pg)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    for i in range(60):
        write(tmp_path / "src", f"f{i:02}", f"content {i}".encode() * 50)
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        job_id = jobs.create_job(
            session, job_name="j", source_system=str(tmp_path / "src"), bucket_id=bucket.id
        ).id
    batches: list[int] = []

    def outage_after_the_second_batch(progress: dict) -> None:
        batches.append(progress["files"])
        if len(batches) == after_batches:  # the database goes away for 10 s
            private_pg.stop()
            threading.Timer(10, private_pg.start).start()

    runner = EngineRunner(
        sessions, store, Options(batch_files=10, progress=outage_after_the_second_batch)
    )
    Scheduler(sessions, runner=runner, heartbeat_timeout=60).run_once()
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert (job.status.value, job.attempts) == ("completed", 1), job.error
        assert job.stats.new == 60
        # Each upload counted once: as many, and as many bytes, as the bucket holds.
        in_bucket = list(store.list_versions(bucket_name))
        assert (job.stats.uploads, job.stats.bytes_uploaded) == (
            len(in_bucket),
            sum(version.size for version in in_bucket),
        )
    assert len(batches) == 7  # it went on after the outage
    engine.dispose()

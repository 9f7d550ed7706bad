"""A backup pod's own catalog login: a role valid for its one job, which backs that job
up completely (packs, duplicates, an incremental run) and can read or change nothing of
another bucket, and which is useless once the job has ended.

(The embedded PostgreSQL trusts loopback logins, so passwords are not what is tested
here: that a role is confined, and that it is gone, is.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import credentials, jobs
from backup_operator.catalog.models import BackupJob, File, JobCredential, JobStatus
from backup_operator.catalog.stats import JobStats
from backup_operator.db import make_engine, make_sessionmaker
from backup_operator.engine.backup import Options, run_backup
from backup_operator.services.buckets import create_bucket
from backup_operator.storage import ObjectStore

from .conftest import back_up, plain, write


@pytest.fixture
def agent_of(db_url: str, session: Session) -> Iterator[object]:
    issued: list[int] = []
    engines = []

    def agent(job_id: int) -> tuple[credentials.Credential, sessionmaker[Session]]:
        credential = credentials.issue(session, job_id, valid_for=timedelta(hours=1))
        session.commit()
        issued.append(job_id)
        engine = make_engine(credential.url(db_url), pool_size=2)
        engines.append(engine)
        return credential, make_sessionmaker(engine)

    yield agent
    for engine in engines:
        engine.dispose()
    for job_id in issued:  # roles are the server's, not the test database's
        credentials.revoke(session, job_id)
        session.commit()


def _run_as(agent: sessionmaker[Session], store: ObjectStore, job_id: int) -> JobStats:
    """What a backup pod does with its job (cli `backup --job`)."""
    with agent() as session:
        jobs.claim_job(session, job_id, worker_id="pod")
        session.commit()
    stats = run_backup(agent, store, job_id, lambda: None, Options())
    with agent() as session:
        assert jobs.finish_job(
            session, job_id, worker_id="pod", status=jobs.outcome(stats), stats=stats
        )
        session.commit()
    return stats


def test_a_jobs_own_login_backs_it_up_and_reaches_nothing_of_another_bucket(
    sessions: sessionmaker[Session],
    session: Session,
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
    agent_of,  # type: ignore[no-untyped-def]
) -> None:
    ours = create_bucket(session, store, name=bucket_name, object_lock=False)
    theirs = create_bucket(session, store, name=bucket_name + "-b", object_lock=False)
    source = tmp_path / "src"
    for i in range(30):
        write(source, f"small/{i}.txt", f"file {i}".encode())
    write(source, "big.bin", b"x" * 2_000_000)
    write(tmp_path / "other", "secret.txt", b"another tenant's")
    back_up(sessions, store, theirs.id, tmp_path / "other")
    earlier, _ = back_up(sessions, store, ours.id, source, pack_threshold=Options().pack_threshold)

    write(source, "small/0.txt", b"changed")
    write(source, "copy-of-1.txt", b"file 1")  # a duplicate of stored content
    job = jobs.create_job(
        session, job_name="pod", source_system=str(source), bucket_id=ours.id, key_prefix="host1"
    )
    session.commit()
    _, agent = agent_of(job.id)
    stats = _run_as(agent, store, job.id)
    assert (stats.changed, stats.duplicate, stats.unchanged) == (1, 1, 30)
    session.expire_all()
    assert jobs.get_job(session, job.id).status is JobStatus.COMPLETED

    with agent() as pod:
        seen = set(pod.scalars(select(File.bucket_id).distinct()))
        assert seen == {ours.id}  # the other bucket's files are not even visible
        assert set(pod.scalars(select(BackupJob.bucket_id).distinct())) == {ours.id}
        # Its bucket's other jobs and other buckets' jobs: no row changes.
        for other in (earlier, *pod.scalars(select(BackupJob.id).where(BackupJob.id != job.id))):
            done = pod.execute(update(BackupJob).where(BackupJob.id == other).values(error="x"))
            assert done.rowcount == 0  # type: ignore[attr-defined]
        pod.rollback()
        with pytest.raises(DBAPIError, match="row-level security"):
            pod.execute(  # a row into another bucket
                text(
                    "INSERT INTO backup_objects (bucket_id, key, is_pack)"
                    " VALUES (:bucket, 'planted', false)"
                ),
                {"bucket": theirs.id},
            )
        pod.rollback()
        for table in ("job_credentials", "retention_runs", "alembic_version"):
            with pytest.raises(ProgrammingError, match="permission denied"):
                pod.execute(text(f"SELECT count(*) FROM {table}"))
            pod.rollback()
    assert session.scalar(select(func.count()).select_from(File).where(File.bucket_id == theirs.id))


def test_a_jobs_login_is_gone_once_revoked(
    db_url: str,
    session: Session,
    store: ObjectStore,
    bucket_name: str,
    agent_of,  # type: ignore[no-untyped-def]
) -> None:
    bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    job = jobs.create_job(session, job_name="pod", source_system="/x", bucket_id=bucket.id)
    session.commit()
    credential, agent = agent_of(job.id)
    with psycopg.connect(plain(credential.url(db_url))) as pod:
        assert pod.execute("SELECT count(*) FROM backup_jobs").fetchone() == (1,)
        assert credentials.revoke(session, job.id) == [credential.role]
        session.commit()
        with pytest.raises(psycopg.OperationalError):  # its session was ended
            pod.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match=credential.role):
        psycopg.connect(plain(credential.url(db_url)))
    with pytest.raises(OperationalError), agent() as later:
        later.execute(text("SELECT 1"))


def test_a_catalog_user_that_may_not_create_roles_is_told_what_to_do(
    db_url: str, session: Session, store: ObjectStore, bucket_name: str
) -> None:
    bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    job = jobs.create_job(session, job_name="pod", source_system="/x", bucket_id=bucket.id)
    session.commit()
    user = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain(db_url), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN NOCREATEROLE")
        admin.execute(f"GRANT SELECT, INSERT, DELETE ON job_credentials, backup_jobs TO {user}")
        engine = make_engine(make_url(db_url).set(username=user).render_as_string(False))
        try:
            with (
                make_sessionmaker(engine)() as app,
                pytest.raises(credentials.CannotIssue, match="CREATEROLE"),
            ):
                credentials.issue(app, job.id, valid_for=timedelta(hours=1))
        finally:
            engine.dispose()
            admin.execute(f"DROP OWNED BY {user}")
            admin.execute(f"DROP ROLE {user}")
    assert session.scalar(select(func.count()).select_from(JobCredential)) == 0

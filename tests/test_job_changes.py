"""The catalog announces job changes as they commit (LISTEN/NOTIFY): a follower hears of
each change of a job's state, not of its heartbeats, and hears "look at everything" again
after the listener lost its connection and got it back."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.orm import Session

from backup_operator.catalog import jobs
from backup_operator.catalog.changes import JobChangeListener
from backup_operator.catalog.models import JobStatus
from backup_operator.catalog.stats import JobStats

from .conftest import plain

GAP = -1  # what the queue receives for "look at everything"


@pytest.fixture
def heard(db_url: str) -> Iterator[queue.Queue[int]]:
    told: queue.Queue[int] = queue.Queue()
    listener = JobChangeListener(db_url, told.put, lambda: told.put(GAP), retry_seconds=(0.1, 0.5))
    listener.start()
    assert told.get(timeout=10) == GAP  # connected: whatever happened before, look
    yield told
    listener.stop()


def _next(told: queue.Queue[int], timeout: float = 5.0) -> int | None:
    try:
        return told.get(timeout=timeout)
    except queue.Empty:
        return None


def test_a_followed_job_is_announced_at_each_change_of_state_and_not_at_heartbeats(
    heard: queue.Queue[int], session: Session, bucket: dict[str, int]
) -> None:
    job = jobs.create_job(session, job_name="told", source_system="/", bucket_id=bucket["id"])
    session.commit()
    assert _next(heard) == job.id  # registered
    claimed = jobs.claim_job(session, job.id, worker_id="w")
    session.commit()
    assert claimed.status is JobStatus.RUNNING
    assert _next(heard) == job.id  # running
    assert jobs.heartbeat(session, job.id, worker_id="w")
    session.commit()
    assert jobs.heartbeat(session, job.id, worker_id="w")
    session.commit()
    jobs.finish_job(
        session, job.id, worker_id="w", status=JobStatus.COMPLETED, stats=JobStats(new=1)
    )
    session.commit()
    # The heartbeats said nothing: the next announcement is the end.
    assert _next(heard) == job.id
    assert _next(heard, timeout=0.5) is None


def test_after_losing_its_connection_the_listener_comes_back_and_says_look_at_everything(
    heard: queue.Queue[int], db_url: str, session: Session, bucket: dict[str, int]
) -> None:
    with psycopg.connect(plain(db_url), autocommit=True) as admin:
        ended = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'minio-backup-operator-changes'"
            " AND datname = current_database()"
        ).fetchall()
    assert ended == [(True,)]
    # Anything committed while it was away is covered by the gap it announces.
    assert _next(heard, timeout=10) == GAP
    job = jobs.create_job(session, job_name="later", source_system="/", bucket_id=bucket["id"])
    session.commit()
    assert _next(heard) == job.id


def test_without_its_catalog_the_listener_says_so_once_and_stops_when_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from backup_operator.embedded import free_port

    nothing_there = f"postgresql+psycopg://user:secret@127.0.0.1:{free_port()}/catalog"
    gaps: list[None] = []
    listener = JobChangeListener(
        nothing_there, lambda _: None, lambda: gaps.append(None), retry_seconds=(0.05, 0.2)
    )
    with caplog.at_level(logging.WARNING, logger="backup_operator.catalog.changes"):
        listener.start()
        time.sleep(1.5)  # many attempts, their delays growing to 0.2 s (plus jitter)
        listener.stop()
    assert not listener._thread.is_alive()  # a stop ends the pause between attempts
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "polling until the catalog is back" in said[0]
    assert "secret" not in said[0]
    assert gaps == [] and not listener.listening.is_set()

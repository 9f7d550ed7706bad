"""The scheduler: due jobs run once across replicas, abandoned jobs are resumed."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.catalog import jobs
from backup_operator.catalog.models import BackupJob, JobStatus
from backup_operator.catalog.stats import JobStats
from backup_operator.services.scheduler import Scheduler
from backup_operator.settings import Settings

from .conftest import digest


def wait_for_status(client: TestClient, job_id: int, status: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/backup-jobs/{job_id}").json()
        if job["status"] == status:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {job['status']}, not {status}")


def test_service_runs_due_jobs_and_waits_for_future_ones(settings: Settings, bucket_name) -> None:
    live = settings.model_copy(
        update={"scheduler_enabled": True, "scheduler_interval_seconds": 0.1}
    )
    # The jobs and the files are in place before any scheduler runs: one running meanwhile
    # could complete the due job before its files are registered.
    with TestClient(create_app(settings.model_copy(update={"scheduler_enabled": False}))) as client:
        bucket = client.post("/buckets/", json={"name": bucket_name}).json()
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        future = client.post(
            "/backup-jobs/",
            json={
                "job_name": "later",
                "source_system": "/srv",
                "bucket_id": bucket["id"],
                "start_time": later,
            },
        ).json()
        due = client.post(
            "/backup-jobs/",
            json={
                "job_name": "now",
                "source_system": "/srv",
                "source_type": "registered",
                "bucket_id": bucket["id"],
                "start_time": "2025-05-07T12:00:00",
            },
        ).json()
        client.post(
            "/files/batch",
            json={
                "job_id": due["id"],
                "files": [
                    {"path": "a", "size": 3, "sha256": digest(b"one")},
                    {"path": "b", "size": 3, "sha256": digest(b"one")},
                ],
            },
        )
    with TestClient(create_app(live)) as client:
        done = wait_for_status(client, due["id"], "completed")
        # One shape (JobStats) for registered and directory jobs.
        counted = {key: done["stats"][key] for key in ("files_seen", "duplicate", "new")}
        assert counted == {"files_seen": 2, "duplicate": 1, "new": 0}
        assert (done["stats"]["pending_upload"], done["stats"]["bytes"]) == (1, 6)
        assert (done["stats"]["bytes_saved"], done["stats"]["version"]) == (3, 2)
        assert done["started_at"] and done["completed_at"] and done["attempts"] == 1
        time.sleep(0.3)
        assert client.get(f"/backup-jobs/{future['id']}").json()["status"] == "pending"


def make_due_jobs(session: Session, bucket_id: int, count: int) -> list[int]:
    made = [
        jobs.create_job(session, job_name=f"j{i}", source_system="/", bucket_id=bucket_id).id
        for i in range(count)
    ]
    session.commit()
    return made


def test_replicas_never_run_the_same_job(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    job_ids = make_due_jobs(session, bucket["id"], 24)
    runs: list[tuple[int, str]] = []
    lock = threading.Lock()

    def runner(session: Session, job: BackupJob, heartbeat) -> JobStats:  # type: ignore[no-untyped-def]
        with lock:
            runs.append((job.id, threading.current_thread().name))
        time.sleep(0.02)
        heartbeat()
        return JobStats()

    replicas = [Scheduler(sessions, runner=runner, worker_id=f"w{i}") for i in range(4)]

    def drain(scheduler: Scheduler) -> None:
        while scheduler.run_once():
            pass

    threads = [threading.Thread(target=drain, args=(s,), name=s.worker_id) for s in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(job_id for job_id, _ in runs)
    assert sorted(counts) == job_ids and set(counts.values()) == {1}
    assert len({worker for _, worker in runs}) > 1  # they really ran side by side
    statuses = {jobs.get_job(session, i).status for i in job_ids}
    assert statuses == {JobStatus.COMPLETED}


def test_job_of_a_dead_worker_is_resumed(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    [job_id] = make_due_jobs(session, bucket["id"], 1)
    claimed = jobs.claim_due_job(session, worker_id="dead-worker")
    session.commit()
    assert claimed is not None and claimed.id == job_id
    session.execute(update(BackupJob).values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=5)))
    session.commit()

    survivor = Scheduler(sessions, worker_id="survivor", heartbeat_timeout=60)
    assert survivor.run_once()
    job = jobs.get_job(session, job_id)
    session.refresh(job)
    assert job.status is JobStatus.COMPLETED
    assert job.worker_id == "survivor" and job.attempts == 2


def test_failing_job_ends_failed_with_the_reason(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    [job_id] = make_due_jobs(session, bucket["id"], 1)

    def broken(session: Session, job: BackupJob, heartbeat) -> JobStats:  # type: ignore[no-untyped-def]
        raise FileNotFoundError("/srv/data does not exist")

    Scheduler(sessions, runner=broken).run_once()
    session.expire_all()
    job = jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == "FileNotFoundError: /srv/data does not exist"


def test_cancel_stops_a_running_job(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    from backup_operator.services.scheduler import CHECK_SECONDS

    [job_id] = make_due_jobs(session, bucket["id"], 1)
    steps: list[float] = []
    cancelled_at: list[float] = []

    def long_job(session: Session, job: BackupJob, heartbeat) -> JobStats:  # type: ignore[no-untyped-def]
        for step in range(100):  # 5 s, if nothing stopped it
            heartbeat()
            steps.append(time.monotonic())
            if step == 2:
                with sessions() as other:
                    jobs.cancel_job(other, job.id)
                    other.commit()
                cancelled_at.append(time.monotonic())
            time.sleep(0.05)
        return JobStats()

    Scheduler(sessions, runner=long_job).run_once()
    session.expire_all()
    assert jobs.get_job(session, job_id).status is JobStatus.CANCELLED
    # The catalog is asked at most every CHECK_SECONDS, not at every step.
    assert len(steps) < 100
    assert steps[-1] - cancelled_at[0] <= CHECK_SECONDS + 0.2


def test_a_job_whose_worker_keeps_dying_fails_after_its_last_attempt_saying_why(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    [job_id] = make_due_jobs(session, bucket["id"], 1)
    for attempt in range(1, 4):  # three workers die in turn
        claimed = jobs.claim_due_job(session, worker_id=f"dead-{attempt}")
        session.commit()
        assert claimed is not None and claimed.attempts == attempt
        session.execute(
            update(BackupJob).values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=5))
        )
        session.commit()
        released = jobs.release_stale_jobs(session, timeout=timedelta(seconds=60), max_attempts=3)
        session.commit()
        assert released.resumed == ([job_id] if attempt < 3 else [])
        assert released.failed == ([] if attempt < 3 else [job_id])
        if attempt < 3:
            resumed = jobs.get_job(session, job_id)
            session.refresh(resumed)
            assert resumed.error == (
                f"WorkerLost: no heartbeat for 60s from worker dead-{attempt}; "
                f"resumed as attempt {attempt + 1} of 3"
            )
    job = jobs.get_job(session, job_id)
    session.refresh(job)
    assert job.status is JobStatus.FAILED and job.completed_at is not None
    assert (
        job.error
        == "WorkerLost: no heartbeat for 60s from worker dead-3; given up after 3 attempts"
    )


def test_a_job_past_its_deadline_is_stopped_and_fails_saying_so(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    job_id = jobs.create_job(
        session,
        job_name="slow",
        source_system="/",
        bucket_id=bucket["id"],
        active_deadline_seconds=1,
    ).id
    session.commit()
    steps: list[int] = []

    def slow(session: Session, job: BackupJob, heartbeat) -> JobStats:  # type: ignore[no-untyped-def]
        for step in range(100):  # 10 s of work, checked between steps
            heartbeat()
            steps.append(step)
            time.sleep(0.1)
        return JobStats()

    told = Recorded()
    Scheduler(sessions, runner=slow, notifier=told).run_once()
    session.expire_all()
    job = jobs.get_job(session, job_id)
    assert job.status is JobStatus.FAILED and job.completed_at is not None
    [document] = told.sent  # its end is notified like any failure
    assert document["outcome"] == "failed" and document["error"].startswith("DeadlineExceeded")
    assert job.error == (
        "DeadlineExceeded: unfinished 1s after it started (activeDeadlineSeconds); stopped"
    )
    assert 5 <= len(steps) < 30  # stopped about a second in, not at the end


def test_a_dead_workers_job_past_its_deadline_fails_instead_of_resuming(
    session: Session, bucket: dict
) -> None:
    job_id = jobs.create_job(
        session,
        job_name="j",
        source_system="/",
        bucket_id=bucket["id"],
        active_deadline_seconds=60,
    ).id
    assert jobs.claim_due_job(session, worker_id="dead") is not None
    session.commit()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    session.execute(update(BackupJob).values(heartbeat_at=an_hour_ago, started_at=an_hour_ago))
    session.commit()
    released = jobs.release_stale_jobs(session, timeout=timedelta(seconds=60), max_attempts=3)
    session.commit()
    assert released == jobs.Released(resumed=[], failed=[job_id])
    session.expire_all()
    assert jobs.get_job(session, job_id).error.startswith("DeadlineExceeded: unfinished 60s")


class Recorded:
    """A notifier that keeps what it is given (the webhook itself: test_notify.py)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, document: dict[str, Any]) -> None:
        self.sent.append(document)

    def close(self, timeout: float) -> None:
        pass


def test_an_idle_scheduler_sleeps_until_its_next_event_or_a_wake_up(
    sessions: sessionmaker[Session], session: Session, bucket: dict
) -> None:
    started: dict[int, float] = {}

    def runner(session: Session, job: BackupJob, heartbeat) -> JobStats:  # type: ignore[no-untyped-def]
        started[job.id] = time.monotonic()
        return JobStats()

    def new_job(start_in: float | None) -> int:
        at = None if start_in is None else datetime.now(UTC) + timedelta(seconds=start_in)
        job = jobs.create_job(
            session, job_name="j", source_system="/srv", bucket_id=bucket["id"], start_time=at
        )
        session.commit()
        return job.id

    queries: list[str] = []
    engine = sessions.kw["bind"]
    scheduler = Scheduler(sessions, runner=runner, interval=0.1, idle_interval=30)
    event.listen(engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
    scheduler.start()
    try:
        time.sleep(0.5)  # idle, with nothing to wait for: asleep for up to 30 s
        asked, since = len(queries), time.monotonic()
        time.sleep(2)
        assert len(queries) == asked  # no query while idle (at interval=0.1: about 60)
        later = new_job(start_in=2)  # nobody tells it: it finds it when its time comes
        scheduler.wake()  # (as a registration does; the job is not due yet)
        now = new_job(start_in=None)
        scheduler.wake()
        deadline = time.monotonic() + 10
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started[now] - since < 2.5 + 0.5  # at the wake-up, not 30 s later
        created = started[now]
        assert 1.5 < started[later] - created < 3.0  # at its start time, not 30 s later
    finally:
        scheduler.stop()

"""Background scheduler: claims due jobs, runs them, heartbeats, resumes the abandoned.

Several replicas may run it at once: claims use `FOR UPDATE SKIP LOCKED`, and a job
whose worker stops heartbeating goes back to pending for another worker to resume.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from ..catalog import jobs
from ..catalog.files import job_file_stats
from ..catalog.models import BackupJob, JobStatus, Runner
from ..catalog.stats import JobStats
from ..errors import Unavailable
from ..retry import RetriesExhausted, outage, retrying, tries_within
from .notify import Notifier, NoWebhook, notify_ended

logger = logging.getLogger(__name__)

# How soon a running job notices it was cancelled or taken over, at most.
CHECK_SECONDS = 1.0


class JobCancelled(Exception):
    """The job was cancelled (or taken over) while it ran."""


class Interrupted(Exception):
    """The worker is shutting down: the job goes back to pending, to be resumed."""


class JobRunner(Protocol):
    def __call__(
        self, session: Session, job: BackupJob, heartbeat: Callable[[], None]
    ) -> JobStats: ...


def complete_registered_files(
    session: Session, job: BackupJob, heartbeat: Callable[[], None]
) -> JobStats:
    """A job whose files were registered through the API: its statistics are its result."""
    heartbeat()
    return job_file_stats(session, job.id)


def record_end(
    session: Session,
    job_id: int,
    *,
    worker_id: str,
    ended: JobStatus,
    stats: JobStats,
    heartbeat_timeout: float,
) -> bool:
    """A job ran to its end: record that through a database outage shorter than half
    the heartbeat timeout (within it, no other worker takes the job over), instead of
    leaving it running until it is resumed and an attempt is spent."""

    def attempt() -> bool:
        try:
            ours = jobs.finish_job(session, job_id, worker_id=worker_id, status=ended, stats=stats)
            session.commit()
            return ours
        except Exception:
            session.rollback()
            raise

    return retrying(
        attempt,
        what=f"recording the end of job {job_id}",
        attempts=tries_within(heartbeat_timeout / 2),
    )


class Heartbeat:
    """Beats for a running job from a thread of its own, so a long upload never looks
    like a dead worker; `check()` raises JobCancelled once the job is no longer ours."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: int, worker_id: str, interval: float
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.worker_id = worker_id
        self.interval = interval
        self.lost = False
        self._checked_at = -CHECK_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self._still_ours():
                    self.lost = True
                    return
            except Exception as error:  # an outage: the next beat tries again
                logger.warning("heartbeat of job %s failed: %s", self.job_id, error)

    def check(self) -> None:
        """Called at every batch; asks the catalog at most every CHECK_SECONDS (a batch
        of small files takes milliseconds: a beat and its commit at each was a tenth)."""
        if self.lost:
            raise JobCancelled(f"job {self.job_id} is no longer ours to run")
        if time.monotonic() - self._checked_at < CHECK_SECONDS:
            return
        self._checked_at = time.monotonic()
        if not self._still_ours():
            self.lost = True
            raise JobCancelled(f"job {self.job_id} is no longer ours to run")

    def _still_ours(self) -> bool:
        """One beat, committed at once: the others see this worker is alive."""
        with self.sessions() as session:
            ours = jobs.heartbeat(session, self.job_id, worker_id=self.worker_id)
            session.commit()
            return ours


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_claimed(
    sessions: sessionmaker[Session],
    session: Session,
    job: BackupJob,
    runner: JobRunner,
    *,
    worker_id: str,
    heartbeat_timeout: float,
    notifier: Notifier,
    stop: threading.Event,
    stopping: str,
) -> JobStatus | None:
    """The life of a job this worker has claimed, for the scheduler and for
    `backup-operator backup` alike: run it with a heartbeat, then record how it ended and
    tell the webhook. Answers its status, or None when `stop` was set (`stopping` says
    why) and the job was handed back to be resumed. An outage is raised: the heartbeat
    lapses and the job is resumed once it ends."""
    try:
        with Heartbeat(sessions, job.id, worker_id, heartbeat_timeout / 4) as heartbeat:

            def check() -> None:
                if stop.is_set():
                    raise Interrupted(stopping)
                heartbeat.check()

            stats = runner(session, job, check)
    except Interrupted as why:
        session.rollback()
        jobs.release_job(session, job.id, worker_id=worker_id)
        session.commit()
        logger.warning("job %s: %s; handed back to be resumed", job.id, why)
        return None
    except JobCancelled as cancelled:
        session.rollback()
        session.expire(job)  # what follows reads what stopped it afresh
        logger.warning("%s (%s); stopped", cancelled, job.error or job.status.value)
        if job.status is JobStatus.FAILED:  # past its deadline (cancels are not told)
            notify_ended(session, notifier, job.id)
        return job.status
    except (Unavailable, RetriesExhausted):
        raise
    except Exception as error:
        session.rollback()
        logger.error("job %s failed: %s: %s", job.id, type(error).__name__, error)
        logger.debug("job %s failure", job.id, exc_info=True)
        failed = jobs.finish_job(
            session,
            job.id,
            worker_id=worker_id,
            status=JobStatus.FAILED,
            error=f"{type(error).__name__}: {error}",
        )
        session.commit()
        if failed:
            notify_ended(session, notifier, job.id)
        return JobStatus.FAILED
    ended = jobs.outcome(stats)
    if record_end(
        session,
        job.id,
        worker_id=worker_id,
        ended=ended,
        stats=stats,
        heartbeat_timeout=heartbeat_timeout,
    ):
        logger.info("job %s %s: %s", job.id, ended.value.replace("_", " "), stats)
        notify_ended(session, notifier, job.id)
    return ended


class Scheduler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        runner: JobRunner = complete_registered_files,
        claims: Runner = Runner.SCHEDULER,
        notifier: Notifier | None = None,
        max_attempts: int | None = None,
        interval: float = 2.0,
        idle_interval: float | None = None,
        heartbeat_timeout: float = 60.0,
        worker_id: str | None = None,
    ) -> None:
        """`idle_interval`: with nothing due, the catalog is asked again only when its
        next known event comes (a start time, a heartbeat going stale, a deadline) or
        after this long, whichever is first; `wake()` cuts it short. Default: `interval`
        (for schedulers whose jobs other processes create without waking them)."""
        self.sessions = sessions
        self.runner = runner
        self.claims = claims
        self.max_attempts = max_attempts
        self.notifier: Notifier = notifier or NoWebhook()
        self._wake = threading.Event()
        self.interval = interval
        self.idle_interval = interval if idle_interval is None else max(interval, idle_interval)
        self.heartbeat_timeout = timedelta(seconds=heartbeat_timeout)
        self.worker_id = worker_id or default_worker_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due jobs now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
                wait = self._idle_wait()
            except Exception as error:
                why = outage(error)
                if why is None:
                    logger.exception(
                        "scheduler: unexpected error; retrying in %.0fs", self.interval
                    )
                else:  # an outage: one line, no traceback
                    logger.warning("scheduler: %s; retrying in %.0fs", why, self.interval)
            self._wake.wait(wait)
            self._wake.clear()

    def _idle_wait(self) -> float:
        if self.idle_interval == self.interval:
            return self.interval
        with self.sessions() as session:
            until = jobs.seconds_to_next_event(
                session, runner=self.claims, heartbeat_timeout=self.heartbeat_timeout
            )
        # (At least `interval`: an event that has just come is handled a moment later.)
        return min(self.idle_interval, max(self.interval, until or self.idle_interval))

    def run_once(self) -> bool:
        """Release stale jobs, claim one due job and run it. Answers whether one ran."""
        with self.sessions() as session:
            released = jobs.release_stale_jobs(
                session, timeout=self.heartbeat_timeout, max_attempts=self.max_attempts
            )
            session.commit()  # recorded before anyone is told
            if released.resumed:
                logger.warning("jobs %s lost their worker; resumed", released.resumed)
            for job_id in released.failed:
                logger.warning("job %s failed: %s", job_id, jobs.get_job(session, job_id).error)
                notify_ended(session, self.notifier, job_id)
            job = jobs.claim_due_job(session, worker_id=self.worker_id, runner=self.claims)
            # The claim is committed at once, and the transaction that read the job ends:
            # left open for the whole backup, it held a lock that made migrations (and all
            # queued behind them) wait, and its start was what now() gave the job's
            # completed_at.
            session.commit()
            if job is None:
                return False
            logger.info("job %s (%s) started by %s", job.id, job.job_name, self.worker_id)
            self._run(session, job)
            return True

    def _run(self, session: Session, job: BackupJob) -> None:
        run_claimed(
            self.sessions,
            session,
            job,
            self.runner,
            worker_id=self.worker_id,
            heartbeat_timeout=self.heartbeat_timeout.total_seconds(),
            notifier=self.notifier,
            stop=self._stop,
            stopping=f"worker {self.worker_id} is stopping",
        )

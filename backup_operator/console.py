"""The engine's console commands: back up now, show a job, restore, verify (the command
line itself, its options and exit codes, is cli.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from .catalog import jobs
from .catalog.models import JobStatus
from .db import make_engine, make_sessionmaker
from .engine.backup import Options, run_backup
from .engine.restore import restore
from .engine.verify import verify
from .engine.walk import Kind, walk
from .errors import Conflict, Invalid
from .exit_codes import Exit
from .services import buckets
from .services.notify import webhook_from
from .services.scheduler import default_worker_id, run_claimed
from .settings import Settings
from .storage import ObjectStore

logger = logging.getLogger("backup_operator.console")


class Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url(), pool_size=4)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.store = ObjectStore.from_settings(settings)


def _print(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2, default=_json))


def _json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


class Progress:
    """On a terminal, a live line (rich's) refreshed every half second: files and bytes
    done, rate, and an ETA once a scan of the source, run beside the backup as restic
    does, has counted what is to do. Otherwise plain log lines, one per batch."""

    def __init__(self, source: str | None = None) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.display: Any = None
        if not self.tty:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as Live,
        )

        self.display = Live(
            TextColumn("{task.fields[files]} files{task.fields[of]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            refresh_per_second=2,
            transient=False,
        )
        self.task = self.display.add_task("backup", total=None, files=0, of=" (counting…)")
        self.display.start()
        if source:
            threading.Thread(target=self._scan, args=(source,), daemon=True).start()

    def _scan(self, source: str) -> None:
        """Count the files and bytes of the source; then the display can tell an ETA."""
        files = size = 0
        for entry in walk(source):
            if entry.kind is Kind.FILE:
                files += 1
                size += entry.size
        self.display.update(self.task, total=size, of=f" of {files}")

    def __call__(self, counters: dict[str, Any]) -> None:
        if self.display is not None:
            self.display.update(
                self.task, completed=counters["bytes_read"], files=counters["files"]
            )
            return
        seconds = time.monotonic() - self.started
        logger.info(
            "%s files, %.1f MB read, %.1f MB uploaded, %.0fs",
            counters["files"],
            counters["bytes_read"] / 1e6,
            counters["bytes_uploaded"] / 1e6,
            seconds,
        )

    def done(self) -> None:
        if self.display is not None:
            self.display.stop()


@dataclass(frozen=True)
class BackupRequest:
    source: str | None = None
    bucket: str | None = None
    prefix: str = ""
    name: str | None = None
    rehash: bool = False
    job: int | None = None  # run (or resume) this existing job instead
    pack_threshold: int | None = None
    mounted_at: str | None = None  # with `job`: where its source is mounted here
    batch_files: int = Options.batch_files


def backup(ctx: Context, request: BackupRequest) -> Exit:
    worker = default_worker_id()
    # SIGTERM stops the backup at its next checkpoint (each batch), not where it lands:
    # an exception raised mid-statement or mid-commit could leave a transaction holding
    # the job's row, and the process waiting on it until the SIGKILL.
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    with ctx.sessions() as session:
        if request.job is not None:
            job = _claim_when_free(ctx, session, request.job, worker, terminated)
            if job is None:
                logger.error("job %s: stopped by SIGTERM before it could be claimed", request.job)
                return Exit.TERMINATED
        else:
            if not request.source or not request.bucket:
                raise Invalid("give SOURCE and --bucket, or --job")
            bucket = buckets.bucket_named(session, ctx.store, request.bucket, create=True)
            job = jobs.create_job(
                session,
                job_name=request.name or request.source,
                source_system=os.path.abspath(request.source),
                bucket_id=bucket.id,
                key_prefix=request.prefix,
                rehash=request.rehash,
                pack_threshold=request.pack_threshold,
            )
            job = jobs.claim_job(session, job.id, worker_id=worker)
            session.commit()
        logger.info("job %s: backing up %s", job.id, job.source_system)
        progress = Progress(request.mounted_at or job.source_system)
        options = Options.for_settings(
            ctx.settings,
            rehash=request.rehash,
            batch_files=request.batch_files,
            progress=progress,
            source=request.mounted_at,
        )
        # The process ends next: the webhook gets a bounded while to deliver.
        notifier = webhook_from(ctx.settings.webhook())
        try:
            ended = run_claimed(
                ctx.sessions,
                session,
                job,
                lambda _, claimed, check: run_backup(
                    ctx.sessions, ctx.store, claimed.id, check, options
                ),
                worker_id=worker,
                heartbeat_timeout=ctx.settings.job_heartbeat_timeout_seconds,
                notifier=notifier,
                stop=terminated,
                stopping="stopped by SIGTERM",
            )
        finally:
            progress.done()
            notifier.close(timeout=30)
        if ended is None:
            return Exit.TERMINATED
        done = jobs.get_job(session, job.id)
    _print({"job_id": done.id, "status": done.status.value, **done.stats.model_dump(mode="json")})
    return {JobStatus.COMPLETED: Exit.OK, JobStatus.PARTIALLY_FAILED: Exit.PARTIAL}.get(
        ended, Exit.FAILED
    )


def _claim_when_free(
    ctx: Context, session: Session, job_id: int, worker: str, terminated: threading.Event
) -> Any:
    """Claim an existing job. One still held by another worker (a pod killed a moment
    ago, whose retry this is) is waited for: once that worker has been silent for the
    heartbeat timeout, the operator hands the job back (counting the attempt). None
    when SIGTERM came first."""
    patience = time.monotonic() + 2 * ctx.settings.job_heartbeat_timeout_seconds
    while True:
        try:
            claimed = jobs.claim_job(session, job_id, worker_id=worker)
            session.commit()
            return claimed
        except Conflict:
            session.rollback()
            held = jobs.get_job(session, job_id).status is JobStatus.RUNNING
            if not held or time.monotonic() > patience:
                raise
            if terminated.wait(1):
                return None


def show(ctx: Context, job_id: int) -> Exit:
    with ctx.sessions() as session:
        job = jobs.get_job(session, job_id)
        _print({c.key: getattr(job, c.key) for c in job.__table__.columns})
    return Exit.OK


def restore_job(
    ctx: Context, job_id: int, target: str, *, path: str | None, prefix: str | None, overwrite: bool
) -> Exit:
    with ctx.sessions() as session:
        result = restore(
            session, ctx.store, job_id, target, prefix=prefix, path=path, overwrite=overwrite
        )
    _print({"job_id": job_id, "target": target, **result.summary()})
    return Exit.OK if result.ok else Exit.FAILED


def verify_bucket(
    ctx: Context, bucket_name: str, *, sample: int, all: bool, repair: bool, delete_untracked: bool
) -> Exit:
    with ctx.sessions() as session:
        bucket = buckets.bucket_named(session, ctx.store, bucket_name, create=False)
        drift = verify(
            session,
            ctx.store,
            bucket.id,
            checksum_sample=sample,
            checksum_all=all,
            repair=repair,
            delete_untracked=delete_untracked,
        )
    _print(drift.summary())
    return Exit.OK if drift.clean else Exit.FAILED


@contextlib.contextmanager
def context(settings: Settings) -> Iterator[Context]:
    ctx = Context(settings)
    try:
        yield ctx
    finally:
        ctx.engine.dispose()

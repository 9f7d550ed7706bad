"""The engine's console commands: back up now, show a job, restore, verify.

Exit codes: 0 success; 1 the job failed, a restore left files out, or verify found
drift it did not repair; 2 bad usage or settings; 3 PostgreSQL or the store is down;
4 the backup ended partially failed (some files could not be stored); 143 a backup was
stopped by SIGTERM and its job handed back, to be resumed (so that a batch Job, whose pod
was evicted, counts the pod as failed and runs it again).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from .catalog import buckets, jobs
from .catalog.models import JobStatus
from .db import make_engine, make_sessionmaker
from .engine.backup import Options, run_backup
from .engine.restore import restore
from .engine.verify import verify
from .engine.walk import Kind, walk
from .errors import Conflict
from .services.notify import notify_ended, webhook_from
from .services.scheduler import Heartbeat, JobCancelled, default_worker_id, record_end
from .settings import Settings
from .storage import ObjectStore

logger = logging.getLogger("backup_operator.console")

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_TERMINATED = 0, 1, 4, 143


class Terminated(Exception):
    """SIGTERM arrived during a backup (a pod evicted, a node drained)."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = commands.add_parser("backup", help="back a directory up now")
    backup.add_argument("source", nargs="?", help="the directory to back up")
    backup.add_argument("--bucket", help="bucket name (created, versioned, if missing)")
    backup.add_argument("--prefix", default="", help="key prefix in the bucket")
    backup.add_argument("--name", help="job name (default: the source)")
    backup.add_argument("--rehash", action="store_true", help="hash files whose stat is unchanged")
    backup.add_argument("--job", type=int, help="run this existing job instead (resumes it)")
    backup.add_argument(
        "--pack-threshold",
        type=int,
        metavar="BYTES",
        help="pack files smaller than this (0: every file its own object; "
        "default PACK_THRESHOLD_BYTES)",
    )
    backup.add_argument(
        "--source", dest="mounted_at", help="with --job: where its source is mounted here"
    )
    backup.add_argument(
        "--batch-files",
        type=int,
        default=Options.batch_files,
        help="files recorded per transaction (default: %(default)s)",
    )
    show = commands.add_parser("show", help="show a job as JSON")
    show.add_argument("job", type=int)
    restore_cmd = commands.add_parser("restore", help="restore a completed job")
    restore_cmd.add_argument("job", type=int)
    restore_cmd.add_argument("target", help="directory to restore into")
    which = restore_cmd.add_mutually_exclusive_group()
    which.add_argument("--path", help="only this file")
    which.add_argument("--prefix", help="only files under this path prefix")
    restore_cmd.add_argument("--overwrite", action="store_true", help="replace existing files")
    verify_cmd = commands.add_parser("verify", help="compare the catalog with a bucket")
    verify_cmd.add_argument("bucket", help="bucket name")
    sample = verify_cmd.add_mutually_exclusive_group()
    sample.add_argument("--sample", type=int, default=0, help="check N random checksums")
    sample.add_argument("--all", action="store_true", help="check every checksum")
    verify_cmd.add_argument(
        "--repair", action="store_true", help="mark versions missing from the store as deleted"
    )
    verify_cmd.add_argument(
        "--delete-untracked",
        action="store_true",
        help="with --repair: delete store versions the catalog does not know",
    )


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


def backup(ctx: Context, args: argparse.Namespace) -> int:
    worker = default_worker_id()
    # SIGTERM stops the backup at its next checkpoint (each batch), not where it lands:
    # an exception raised mid-statement or mid-commit could leave a transaction holding
    # the job's row, and the process waiting on it until the SIGKILL.
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    with ctx.sessions() as session:
        if args.job is not None:
            job = _claim_when_free(ctx, session, args.job, worker, terminated)
            if job is None:
                logger.error("job %s: stopped by SIGTERM before it could be claimed", args.job)
                return EXIT_TERMINATED
        else:
            if not args.source or not args.bucket:
                raise SystemExit("backup: give SOURCE and --bucket, or --job")
            bucket = buckets.bucket_named(session, ctx.store, args.bucket, create=True)
            job = jobs.create_job(
                session,
                job_name=args.name or args.source,
                source_system=os.path.abspath(args.source),
                bucket_id=bucket.id,
                key_prefix=args.prefix,
                rehash=args.rehash,
                pack_threshold=args.pack_threshold,
            )
            job = jobs.claim_job(session, job.id, worker_id=worker)
    logger.info("job %s: backing up %s", job.id, job.source_system)
    progress = Progress(args.mounted_at or job.source_system)
    interval = ctx.settings.job_heartbeat_timeout_seconds / 4
    try:
        with Heartbeat(ctx.sessions, job.id, worker, interval) as heartbeat:

            def check() -> None:
                if terminated.is_set():
                    raise Terminated()
                heartbeat.check()

            stats = run_backup(
                ctx.sessions,
                ctx.store,
                job.id,
                check,
                Options.for_settings(
                    ctx.settings,
                    rehash=args.rehash,
                    batch_files=args.batch_files,
                    progress=progress,
                    source=args.mounted_at,
                ),
            )
    except Terminated:
        progress.done()
        with ctx.sessions() as session:
            jobs.release_job(session, job.id, worker_id=worker)
        logger.error("job %s: stopped by SIGTERM; handed back to be resumed", job.id)
        return EXIT_TERMINATED
    except JobCancelled as stop:
        progress.done()
        with ctx.sessions() as session:
            stopped = jobs.get_job(session, job.id)
            logger.error("%s: %s", stop, stopped.error or stopped.status.value)
            if stopped.status is JobStatus.FAILED:  # past its deadline (cancels are not told)
                _notify(ctx, session, job.id)
        return EXIT_FAILED
    except Exception as error:
        progress.done()
        reason = f"{type(error).__name__}: {error}"
        with ctx.sessions() as session:
            if jobs.finish_job(
                session, job.id, worker_id=worker, status=JobStatus.FAILED, error=reason
            ):
                _notify(ctx, session, job.id)
        logger.error("job %s failed: %s", job.id, reason)
        return EXIT_FAILED
    progress.done()
    ended = jobs.outcome(stats)
    with ctx.sessions() as session:
        if record_end(
            session,
            job.id,
            worker_id=worker,
            ended=ended,
            stats=stats,
            heartbeat_timeout=ctx.settings.job_heartbeat_timeout_seconds,
        ):
            _notify(ctx, session, job.id)
    _print({"job_id": job.id, "status": ended.value, **stats.model_dump(mode="json")})
    return EXIT_OK if ended is JobStatus.COMPLETED else EXIT_PARTIAL


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
            return jobs.claim_job(session, job_id, worker_id=worker)
        except Conflict:
            session.rollback()
            held = jobs.get_job(session, job_id).status is JobStatus.RUNNING
            if not held or time.monotonic() > patience:
                raise
            if terminated.wait(1):
                return None


def _notify(ctx: Context, session: Session, job_id: int) -> None:
    """The process ends next: the webhook gets a bounded while to deliver."""
    notifier = webhook_from(ctx.settings.webhook())
    notify_ended(session, notifier, job_id)
    notifier.close(timeout=30)


def show(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.sessions() as session:
        job = jobs.get_job(session, args.job)
        _print({c.key: getattr(job, c.key) for c in job.__table__.columns})
    return EXIT_OK


def restore_command(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.sessions() as session:
        result = restore(
            session,
            ctx.store,
            args.job,
            args.target,
            prefix=args.prefix,
            path=args.path,
            overwrite=args.overwrite,
        )
    _print({"job_id": args.job, "target": args.target, **result.summary()})
    return EXIT_OK if result.ok else EXIT_FAILED


def verify_command(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.sessions() as session:
        bucket = buckets.bucket_named(session, ctx.store, args.bucket, create=False)
        drift = verify(
            session,
            ctx.store,
            bucket.id,
            checksum_sample=args.sample,
            checksum_all=args.all,
            repair=args.repair,
            delete_untracked=args.delete_untracked,
        )
    _print(drift.summary())
    return EXIT_OK if drift.clean else EXIT_FAILED


COMMANDS = {"backup": backup, "show": show, "restore": restore_command, "verify": verify_command}


def run(settings: Settings, args: argparse.Namespace) -> int:
    ctx = Context(settings)
    try:
        return COMMANDS[args.command](ctx, args)
    finally:
        ctx.engine.dispose()

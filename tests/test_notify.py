"""Webhook notifications at a job's end: the document, retries with backoff, and a
receiver that hangs never holding the job. (The receiver is a real HTTP server.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.services.buckets import create_bucket
from backup_operator.services.notify import Webhook
from backup_operator.services.runner import EngineRunner
from backup_operator.services.scheduler import Scheduler
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore

from .conftest import write


class Receiver:
    def __init__(self, failures: int = 0, hang: float = 0.0) -> None:
        self.failures = failures
        self.hang = hang
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.hang)
                if receiver.attempts <= receiver.failures:
                    self.send_response(503)
                else:
                    receiver.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/backups?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(failures=2)
    yield running
    running.close()


def run_one_job(
    sessions: sessionmaker[Session], store: ObjectStore, source: Path, bucket: str, hook: Webhook
) -> tuple[int, float]:
    with unit_of_work(sessions) as session:
        made = create_bucket(session, store, name=bucket, object_lock=False)
        job = jobs.create_job(
            session,
            job_name="nightly",
            source_system=str(source),
            bucket_id=made.id,
            pack_threshold=0,  # one object per file: the bytes uploaded are the content's
        )
    scheduler = Scheduler(sessions, runner=EngineRunner(sessions, store), notifier=hook)
    started = time.monotonic()
    assert scheduler.run_once()
    return job.id, time.monotonic() - started


def test_a_job_end_is_posted_with_its_outcome_counts_and_failures_after_retries(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(tmp_path / "src", "a.txt", b"alpha")
    write(tmp_path / "src", "b.txt", b"alpha")
    hook = Webhook(receiver.url, attempts=4, backoff=0.05)
    job_id, _ = run_one_job(sessions, store, tmp_path / "src", bucket_name, hook)
    hook.close(timeout=10)
    assert receiver.attempts == 3  # two 503s, then delivered
    (document,) = receiver.received
    assert document["event"] == "backup.ended"
    assert (document["job_id"], document["outcome"], document["bucket"]) == (
        job_id,
        "completed",
        bucket_name,
    )
    assert document["counts"]["files_seen"] == 2 and document["counts"]["duplicate"] == 1
    assert document["bytes"] == {
        "read": document["bytes"]["read"],
        "uploaded": 5,
        "deduplicated": 5,
    }
    assert document["failures"] == {"count": 0, "first_paths": []}
    assert document["duration_seconds"] > 0
    assert "s3cret" not in caplog.text  # the URL's token never reaches the logs


def test_a_receiver_that_hangs_never_holds_the_job(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_name: str, tmp_path: Path
) -> None:
    slow = Receiver(hang=5)
    try:
        write(tmp_path / "src", "a.txt", b"a")
        hook = Webhook(slow.url, attempts=1, timeout=10)
        job_id, seconds = run_one_job(sessions, store, tmp_path / "src", bucket_name, hook)
        assert seconds < 4  # the job ended while the receiver still sat on the request
        with sessions() as session:
            assert jobs.get_job(session, job_id).status == "completed"
        hook.close(timeout=10)
        assert slow.received and slow.received[0]["job_id"] == job_id
    finally:
        slow.close()


def test_a_failed_job_is_notified_too(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    receiver.failures = 0
    hook = Webhook(receiver.url, backoff=0.05)
    run_one_job(sessions, store, tmp_path / "missing", bucket_name, hook)
    hook.close(timeout=10)
    (document,) = receiver.received
    assert document["outcome"] == "failed" and document["error"].startswith("SourceMissing")

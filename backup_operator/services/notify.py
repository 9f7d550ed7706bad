"""Webhook notifications: a JSON document POSTed when a backup job ends, retried with
backoff from a thread of its own, so that a slow or broken receiver never holds a job."""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from ..catalog.models import BackupJob, Bucket
from ..retry import RetriesExhausted, retrying

logger = logging.getLogger(__name__)

FAILURE_PATHS = 10  # failed paths named in a notification; the API lists them all


def job_ended(job: BackupJob, bucket: str) -> dict[str, Any]:
    """The document sent when `job` has ended (any outcome)."""
    stats = job.stats
    return {
        "event": "backup.ended",
        "job_id": job.id,
        "job_name": job.job_name,
        "namespace": job.namespace,
        "schedule": job.schedule,
        "source": job.source_system,
        "bucket": bucket,
        "outcome": job.status.value,
        "error": job.error,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "duration_seconds": stats.duration_seconds,
        "counts": stats.model_dump(
            include={"files_seen", "new", "changed", "unchanged", "duplicate", "deleted"}
        ),
        "bytes": {
            "read": stats.bytes_read,
            "uploaded": stats.bytes_uploaded,
            "deduplicated": stats.bytes_saved,
        },
        "failures": {
            "count": stats.failed_files,
            "first_paths": stats.failed_paths()[:FAILURE_PATHS],
        },
    }


class Undelivered(Exception):
    """The receiver did not take a document; the message says why (never the URL)."""


class Webhook:
    """Delivers documents in order from a daemon thread; each is tried `attempts` times,
    waiting about `backoff`, 2x`backoff`, ... between tries, then dropped with a log line."""

    def __init__(
        self, url: str, *, attempts: int = 5, backoff: float = 1.0, timeout: float = 10.0
    ) -> None:
        self.url = url
        # Logs name the host only: the URL may carry a token.
        self.where = urlsplit(url).netloc or "the webhook"
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._deliver_all, name="webhook", daemon=True)
        self._thread.start()

    def send(self, document: dict[str, Any]) -> None:
        """Queue it; never waits for the receiver."""
        self._queue.put(document)

    def close(self, timeout: float = 30.0) -> None:
        """Let queued documents go out for up to `timeout` seconds (a process ending)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _deliver_all(self) -> None:
        while (document := self._queue.get()) is not None:
            self._deliver(document)

    def _deliver(self, document: dict[str, Any]) -> None:
        body = json.dumps(document, default=str).encode()
        try:
            retrying(
                functools.partial(self._post, body),
                what=f"webhook to {self.where}",
                attempts=self.attempts,
                first_delay=self.backoff,
                max_delay=60.0,
                retry_on=lambda error: isinstance(error, Undelivered),
                level=logging.INFO,
            )
        except RetriesExhausted as error:
            logger.warning("%s; job %s not notified", error, document.get("job_id"))

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                if response.status >= 300:
                    raise Undelivered(f"HTTP {response.status}")
        except urllib.error.HTTPError as error:
            raise Undelivered(f"HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            raise Undelivered(type(error).__name__) from None  # its text may hold the URL


class NoWebhook:
    def send(self, document: dict[str, Any]) -> None:
        pass

    def close(self, timeout: float = 30.0) -> None:
        pass


Notifier = Webhook | NoWebhook


def webhook_from(url: str | None) -> Notifier:
    return Webhook(url) if url else NoWebhook()


def notify_ended(session: Session, notifier: Notifier, job_id: int) -> None:
    """Send the ended job's document (read afresh from the catalog)."""
    if isinstance(notifier, NoWebhook):
        return
    job = session.get_one(BackupJob, job_id, populate_existing=True)
    notifier.send(job_ended(job, session.get_one(Bucket, job.bucket_id).name))

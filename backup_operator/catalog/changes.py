"""Catalog jobs' changes as they commit: LISTEN on the channel a trigger on backup_jobs
notifies (migration 0021), from a thread of its own with one connection of its own.

Whoever follows jobs is told each changed job's id, and told to look at everything
after a gap (the listener's first connection, and every reconnection: what changed while
nobody listened was missed). An idle listener sends the database nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

CHANNEL = "backup_job_changed"


class JobChangeListener:
    def __init__(
        self,
        database_url: str,
        on_change: Callable[[int], None],
        on_gap: Callable[[], None],
        *,
        retry_seconds: tuple[float, float] = (0.5, 15.0),
    ) -> None:
        self._conninfo = make_url(database_url).set(drivername="postgresql")
        self._on_change = on_change
        self._on_gap = on_gap
        self._retry = retry_seconds
        self._stopping = threading.Event()
        self.listening = threading.Event()  # clear: followers must look for themselves
        self._thread = threading.Thread(target=self._run, name="job-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = self._retry[0]
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as error:
                if self.listening.is_set() or delay == self._retry[0]:  # once per outage
                    logger.warning("job changes: %s; polling until the catalog is back", error)
                if self.listening.is_set():
                    delay = self._retry[0]
            except Exception:  # a follower's bug must not end the listening
                logger.exception("job changes: a follower failed")
            self.listening.clear()
            self._stopping.wait(delay)
            delay = min(delay * 2, self._retry[1])

    def _listen(self) -> None:
        with psycopg.connect(
            self._conninfo.render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=3,
            application_name="minio-backup-operator-changes",
            # A dead peer (a partition, not a restart) is found within about a minute.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            logger.info("job changes: listening")
            self._on_gap()
            while not self._stopping.is_set():
                # The timeout only lets it see `stop`: waiting sends nothing.
                for notification in connection.notifies(timeout=1.0):
                    self._on_change(int(notification.payload))

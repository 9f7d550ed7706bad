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
from tenacity import RetryCallState, Retrying, retry_if_exception

from ..retry import backoff

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
        announced = False  # the outage under way (a lost connection) was logged
        while not self._stopping.is_set():
            try:
                self._reconnecting(quiet=announced)(self._listen)
            except psycopg.Error as error:  # lost while listening: the next outage begins
                announced = not self._stopping.is_set()
                if announced:
                    logger.warning("job changes: %s; polling until the catalog is back", error)
            except Exception:  # a follower's bug must not end the listening
                announced = False
                logger.exception("job changes: a follower failed")
                self._stopping.wait(self._retry[0])
            self.listening.clear()

    def _reconnecting(self, *, quiet: bool) -> Retrying:
        """Connecting, again with backoff and jitter (retry.py's) while the catalog is
        down; a connection lost once it listened ends the attempts, so that each outage
        backs off afresh and is announced once."""

        def announce(state: RetryCallState) -> None:
            if state.attempt_number == 1 and state.outcome is not None and not quiet:
                error = state.outcome.exception()
                logger.warning("job changes: %s; polling until the catalog is back", error)

        return Retrying(
            retry=retry_if_exception(
                lambda error: isinstance(error, psycopg.Error) and not self.listening.is_set()
            ),
            wait=backoff(*self._retry),
            stop=lambda _: self._stopping.is_set(),
            sleep=self._pause,
            before_sleep=announce,
            reraise=True,
        )

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)  # (a stop ends it)

    def _listen(self) -> None:
        if self._stopping.is_set():  # (stopped during a pause: no connection more)
            return
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

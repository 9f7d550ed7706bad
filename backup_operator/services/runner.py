"""The scheduler's job runner: directory jobs go through the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from .. import paths
from ..catalog.models import BackupJob, SourceType
from ..catalog.stats import JobStats
from ..engine.backup import Options, run_backup
from ..storage import ObjectStore
from .scheduler import complete_registered_files


class EngineRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        options: Options | None = None,
        *,
        source_roots: Sequence[Path] | None = None,
    ) -> None:
        """`source_roots`: the only directories a job may read (SOURCE_ROOTS), checked
        again when it runs (the setting may have changed since it was created); None:
        unconfined."""
        self.sessions = sessions
        self.store = store
        self.options = options or Options()
        self.source_roots = source_roots

    def __call__(self, session: Session, job: BackupJob, heartbeat: Callable[[], None]) -> JobStats:
        if job.source_type is SourceType.REGISTERED:
            return complete_registered_files(session, job, heartbeat)
        if self.source_roots is not None:
            paths.confined(
                job.source_system, self.source_roots, field="source_system", setting="SOURCE_ROOTS"
            )
        return run_backup(self.sessions, self.store, job.id, heartbeat, self.options)

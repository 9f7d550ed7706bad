"""The scheduler's job runner: directory jobs go through the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ..catalog.models import BackupJob, SourceType
from ..scheduler import complete_registered_files
from ..storage import ObjectStore
from .backup import Options, run_backup


class EngineRunner:
    def __init__(
        self, sessions: sessionmaker[Session], store: ObjectStore, options: Options | None = None
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.options = options or Options()

    def __call__(
        self, session: Session, job: BackupJob, heartbeat: Callable[[], None]
    ) -> dict[str, Any]:
        if job.source_type is SourceType.REGISTERED:
            return complete_registered_files(session, job, heartbeat)
        return run_backup(self.sessions, self.store, job.id, heartbeat, self.options)

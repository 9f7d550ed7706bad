"""Advisory locks between retention runs and backups of the same bucket."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

RETENTION_LOCK_SPACE = 7412002  # first key of the advisory locks: (space, bucket id)


def lock_bucket_for_retention(session: Session, bucket_id: int, *, shared: bool = False) -> None:
    """A retention run of jobs holds it exclusively for its whole transaction; file
    registration takes it shared, so no backup can come to reference a version between
    the run's check that nothing does and its delete. Released at commit or rollback."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    session.execute(
        text(f"SELECT {function}(:space, :bucket)"),
        {"space": RETENTION_LOCK_SPACE, "bucket": bucket_id},
    )

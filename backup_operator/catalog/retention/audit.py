"""The audit of real runs: who ran which policy, when, what it deleted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import ObjectVersion, RetentionRun
from ..pages import Page, scalar_page
from ..rows import get_row


def list_runs(
    session: Session, *, policy_id: int | None, after: int | None, limit: int
) -> Page[RetentionRun]:
    query = select(RetentionRun)
    if policy_id is not None:
        query = query.where(RetentionRun.policy_id == policy_id)
    return scalar_page(session, query, RetentionRun.id, after=after, limit=limit)


def get_run(session: Session, run_id: int) -> RetentionRun:
    return get_row(session, RetentionRun, run_id, what="retention run", field="run_id")


def run_deletions(
    session: Session, run_id: int, *, after: int | None, limit: int
) -> Page[ObjectVersion]:
    get_run(session, run_id)
    query = select(ObjectVersion).where(ObjectVersion.deleted_by_run_id == run_id)
    return scalar_page(session, query, ObjectVersion.id, after=after, limit=limit)

"""The S3 Object Lock and legal hold that policies put on the versions they govern, as they
are stored."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ...specs.objects import Lock
from ..models import LockMode, RetentionPolicy, RetentionTarget


def locking_policies(
    session: Session, *, bucket_id: int, source_system: str
) -> list[RetentionPolicy]:
    """Policies that lock what a job of this source stores in this bucket."""
    return list(
        session.scalars(
            select(RetentionPolicy).where(
                RetentionPolicy.lock_mode.is_not(None) | RetentionPolicy.legal_hold,
                or_(
                    and_(
                        RetentionPolicy.target == RetentionTarget.JOBS,
                        RetentionPolicy.bucket_id == bucket_id,
                        RetentionPolicy.source_system == source_system,
                    ),
                    and_(
                        RetentionPolicy.target == RetentionTarget.VERSIONS,
                        RetentionPolicy.bucket_id.is_(None)
                        | (RetentionPolicy.bucket_id == bucket_id),
                    ),
                ),
            )
        )
    )


def lock_for(policies: list[RetentionPolicy], key: str, now: datetime) -> Lock | None:
    """The strongest lock of the policies governing `key`: COMPLIANCE over GOVERNANCE,
    the most days, a legal hold if any asks. (Tag scopes are not known at upload.)"""
    applying = [
        p
        for p in policies
        if p.target is RetentionTarget.JOBS or not p.key_prefix or key.startswith(p.key_prefix)
    ]
    if not applying:
        return None
    timed = [p for p in applying if p.lock_mode is not None and p.lock_days]
    mode = None
    if timed:
        compliance = any(p.lock_mode is LockMode.COMPLIANCE for p in timed)
        mode = LockMode.COMPLIANCE if compliance else LockMode.GOVERNANCE
    until = now + timedelta(days=max(p.lock_days or 0 for p in timed)) if timed else None
    return Lock(mode, until, any(p.legal_hold for p in applying))

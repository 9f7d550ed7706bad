"""Retention policies themselves: checked against their spec, created, changed, put (a
resource reconciled), deleted."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...errors import Conflict, Invalid, NotFound
from ...specs.fields import check, parse
from ...specs.retention_policy import PolicySpec
from ..models import Bucket, RetentionPolicy, RetentionTarget
from ..pages import Page, scalar_page
from ..rows import get_row


def _check_target(session: Session, spec: PolicySpec) -> None:
    """What a jobs policy needs, and a bucket that exists (the spec's own bounds are
    checked by `check`)."""
    if spec.bucket_id is not None and session.get(Bucket, spec.bucket_id) is None:
        raise NotFound(f"bucket {spec.bucket_id} not found", field="bucket_id")
    if spec.keep_min_successful is not None and spec.target is not RetentionTarget.JOBS:
        raise Invalid(
            "applies to a jobs policy (the successful backups of a source)",
            field="keep_min_successful",
        )
    if spec.target is not RetentionTarget.JOBS:
        return
    if spec.bucket_id is None:
        raise Invalid("a policy of jobs needs the bucket of its source", field="bucket_id")
    if not spec.source_system:
        raise Invalid("a policy of jobs needs its source", field="source_system")


def _check_lock(session: Session, spec: PolicySpec) -> None:
    if (spec.lock_mode is None) != (spec.lock_days is None):
        raise Invalid("lock_mode and lock_days go together", field="lock_days")
    if (spec.lock_mode or spec.legal_hold) and spec.bucket_id is not None:
        bucket = session.get(Bucket, spec.bucket_id)
        if bucket is not None and not bucket.object_lock:
            raise Invalid(
                f"bucket {bucket.name!r} was not created with object lock",
                field="lock_mode" if spec.lock_mode else "legal_hold",
            )


def _checked(session: Session, fields: Mapping[str, Any]) -> PolicySpec:
    spec = parse(PolicySpec, fields)
    check(spec)
    _check_target(session, spec)
    _check_lock(session, spec)
    return spec


def _refuse_taken(session: Session, name: str) -> None:
    if session.scalar(select(RetentionPolicy.id).where(RetentionPolicy.name == name)):
        raise Conflict(f"retention policy {name!r} already exists", field="name")


def create_policy(
    session: Session, *, name: str, namespace: str | None = None, **fields: Any
) -> RetentionPolicy:
    """A new policy; `fields` are PolicySpec's (a field it does not know is refused)."""
    spec = _checked(session, fields)
    _refuse_taken(session, name)
    policy = RetentionPolicy(name=name, namespace=namespace, **spec.model_dump())
    session.add(policy)
    session.flush()
    return policy


def get_policy(session: Session, policy_id: int) -> RetentionPolicy:
    return get_row(session, RetentionPolicy, policy_id, what="retention policy", field="policy_id")


def list_policies(session: Session, *, after: int | None, limit: int) -> Page[RetentionPolicy]:
    return scalar_page(
        session, select(RetentionPolicy), RetentionPolicy.id, after=after, limit=limit
    )


def update_policy(session: Session, policy_id: int, **changes: Any) -> RetentionPolicy:
    """Change the given fields (PolicySpec's, and name or namespace); the rest stay."""
    policy = get_policy(session, policy_id)
    if "rules" in changes and changes["rules"] is None:
        changes["rules"] = {}
    name = changes.pop("name", policy.name)
    namespace = changes.pop("namespace", policy.namespace)
    current = {field: getattr(policy, field) for field in PolicySpec.model_fields}
    spec = _checked(session, {**current, **changes})
    if name != policy.name:
        _refuse_taken(session, name)
    values = {"name": name, "namespace": namespace, **spec.model_dump()}
    if any(getattr(policy, attribute) != value for attribute, value in values.items()):
        policy.changed_at = datetime.now(UTC)  # a changed policy needs a new dry run
    for attribute, value in values.items():
        setattr(policy, attribute, value)
    session.flush()
    return policy


def put_policy(session: Session, *, name: str, **fields: Any) -> RetentionPolicy:
    """Create the policy of this name, or make the existing one say exactly `fields`
    (a Kubernetes resource reconciled into the catalog): a field not given takes the
    spec's default, but the description, which a resource does not have."""
    existing = session.scalar(select(RetentionPolicy.id).where(RetentionPolicy.name == name))
    if existing is None:
        return create_policy(session, name=name, **fields)
    defaults = PolicySpec().model_dump(exclude={"description"})
    return update_policy(session, existing, **{**defaults, **fields})


def delete_policy(session: Session, policy_id: int) -> None:
    session.delete(get_policy(session, policy_id))
    session.flush()

"""Namespaces as tenants of the catalog: a bucket belongs to the namespace that first
used it through the operator, no other namespace's resources may use it, and a policy a
namespace made governs that namespace's buckets only."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import retention
from backup_operator.errors import Conflict
from backup_operator.services import buckets
from backup_operator.storage import ObjectStore

from .conftest import back_up, write


def _name() -> str:
    return f"tenant-{uuid.uuid4().hex[:12]}"


def test_a_bucket_belongs_to_the_namespace_that_made_it_and_refuses_others(
    session: Session, store: ObjectStore
) -> None:
    name = _name()
    made = buckets.bucket_named(session, store, name, create=True, namespace="team-a")
    assert made.namespace == "team-a"
    assert buckets.bucket_named(session, store, name, create=True, namespace="team-a").id == made.id
    with pytest.raises(Conflict) as refused:
        buckets.bucket_named(session, store, name, create=True, namespace="team-b")
    assert refused.value.field == "bucket"
    assert "belongs to namespace 'team-a'" in refused.value.message
    # The platform (API, CLI: no namespace) still reaches it.
    assert buckets.bucket_named(session, store, name, create=False).id == made.id


def test_an_unclaimed_bucket_goes_to_the_first_namespace_that_uses_it(
    session: Session, store: ObjectStore
) -> None:
    name = _name()
    buckets.create_bucket(session, store, name=name, object_lock=False)  # by the platform
    claimed = buckets.bucket_named(session, store, name, create=False, namespace="team-b")
    assert claimed.namespace == "team-b"
    with pytest.raises(Conflict):
        buckets.bucket_named(session, store, name, create=False, namespace="team-a")


def test_a_namespaces_policy_governs_only_its_own_buckets_whatever_its_scope(
    sessions: sessionmaker[Session], session: Session, store: ObjectStore, tmp_path: Path
) -> None:
    owned = {}
    for team in ("team-a", "team-b"):
        bucket = buckets.bucket_named(session, store, _name(), create=True, namespace=team)
        source = tmp_path / team
        for generation in range(3):  # three versions of one file in each bucket
            write(source, "app.yaml", f"{team} v{generation}".encode())
            back_up(sessions, store, bucket.id, source)
        owned[team] = bucket.name
    # Scoped by key prefix only: without its namespace, it would reach both buckets.
    policy = retention.create_policy(
        session, name="team-b/keep-one", namespace="team-b", keep_last=1, key_prefix="host1"
    )
    planned = retention.plan(session, policy.id)
    assert {v.bucket for v in planned.versions} == {owned["team-b"]}
    assert len(planned.to_delete) == 2
    platform = retention.create_policy(session, name="all", keep_last=1, key_prefix="host1")
    assert {v.bucket for v in retention.plan(session, platform.id).versions} == set(owned.values())

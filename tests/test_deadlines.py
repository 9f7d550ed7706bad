"""Retention runs and deletions with a deadline, against a store that hangs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import retention
from backup_operator.catalog.models import RetentionRun
from backup_operator.deadline import Deadline, DeadlineExceeded, run_within
from backup_operator.embedded import EmbeddedS3
from backup_operator.errors import Unavailable
from backup_operator.services import retention as retention_service
from backup_operator.services.buckets import create_bucket
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore, make_client

from .conftest import catalog_versions, endpoint_of, frozen, versions_of_one_file


def test_a_retention_run_on_a_hung_store_stops_at_its_deadline_and_the_catalog_stays_true(
    sessions: sessionmaker[Session],
    private_s3: EmbeddedS3,
    private_store: ObjectStore,
    tmp_path: Path,
    bucket_name: str,
) -> None:
    store = private_store
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        policy = retention.create_policy(session, name="p", keep_last=1, bucket_id=bucket.id)
        bucket_id, policy_id = bucket.id, policy.id
    versions_of_one_file(sessions, store, bucket_id, tmp_path / "src", 3)

    def apply(deadline: Deadline) -> retention_service.ApplyResult:
        with sessions() as session:
            return retention_service.apply(session, store, policy_id, actor="t", deadline=deadline)

    with frozen(private_s3):
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded) as stopped:
            run_within(1.5, apply)
        waited = time.monotonic() - began
    assert 1.5 <= waited < 5  # the caller is free at the deadline, not after the store's timeouts
    assert str(stopped.value) == (
        f"unfinished after 1.5s, while deleting 2 versions from bucket {bucket_name}"
    )

    # The abandoned run stops at its next step once the store answers; what it did is
    # recorded either way: the catalog and the store agree on every version.
    def settled() -> RetentionRun | None:
        with sessions() as session:
            run = session.scalars(select(RetentionRun).where(RetentionRun.policy_id == policy_id))
            found = run.one()
            return found if found.finished_at or found.error else None

    run = None
    for _ in range(100):
        run = settled()
        if run is not None:
            break
        time.sleep(0.1)
    assert run is not None
    with sessions() as session:
        assert catalog_versions(session, bucket_id) == {
            v.version_id for v in store.list_versions(bucket_name, "")
        }


def test_a_run_out_of_time_between_steps_records_why_and_deletes_nothing_more(
    sessions: sessionmaker[Session], store: ObjectStore, tmp_path: Path, bucket_name: str
) -> None:
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        policy = retention.create_policy(session, name="q", keep_last=1, bucket_id=bucket.id)
        bucket_id, policy_id = bucket.id, policy.id
    versions_of_one_file(sessions, store, bucket_id, tmp_path / "src", 2)
    with sessions() as session:
        with pytest.raises(DeadlineExceeded):
            retention_service.apply(session, store, policy_id, actor="t", deadline=Deadline(0))
        run = session.scalars(select(RetentionRun).where(RetentionRun.policy_id == policy_id)).one()
        assert run.finished_at is None
        assert run.error == (
            f"DeadlineExceeded: unfinished after 0s, before deleting 1 versions from bucket "
            f"{bucket_name}"
        )
        assert len(catalog_versions(session, bucket_id)) == 2
    assert len(list(store.list_versions(bucket_name, ""))) == 2


def test_a_hung_store_is_reported_unavailable_after_the_read_timeout_and_its_retries(
    private_s3: EmbeddedS3,
) -> None:
    store = ObjectStore(make_client(*endpoint_of(private_s3), secure=False, read_timeout=0.5))
    store.ping()
    with frozen(private_s3):
        began = time.monotonic()
        with pytest.raises(Unavailable) as down:
            store.ping()
        waited = time.monotonic() - began
    assert 2 <= waited < 10  # four tries of half a second, not four of two minutes
    assert down.value.dependency == "object store"

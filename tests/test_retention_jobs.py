"""Retention of jobs (snapshot-style) with the real engine, S3 server and Postgres:
forgotten jobs, reference counting across kept jobs and duplicates, idempotence, and a
retention run concurrent with a backup."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.models import (
    BackupJob,
    JobStatus,
    LockMode,
    ObjectVersion,
    RetentionPolicy,
    RetentionRun,
    RetentionTarget,
)
from backup_operator.catalog.retention import create_policy, dry_run, plan, update_policy
from backup_operator.embedded import EmbeddedS3
from backup_operator.engine.restore import restore
from backup_operator.engine.verify import verify
from backup_operator.errors import Conflict, Invalid
from backup_operator.services.buckets import create_bucket
from backup_operator.services.retention import apply
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore

from .conftest import back_up as run_backup_job
from .conftest import write as write_file


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        write_file(root, name, content)


def back_up(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, source: Path
) -> int:
    return run_backup_job(sessions, store, bucket_id, source, prefix="")[0]


def jobs_policy(
    session: Session, name: str, bucket_id: int, source: Path, keep_last: int = 1, **more: Any
) -> RetentionPolicy:
    """A policy of the jobs of `source`: its newest `keep_last` completed backups stay."""
    policy = create_policy(
        session,
        name=name,
        rules={"keep_last": keep_last},
        target=RetentionTarget.JOBS,
        bucket_id=bucket_id,
        source_system=str(source),
        **more,
    )
    session.commit()
    return policy


def versions_in(store: ObjectStore, bucket: str) -> set[tuple[str, str]]:
    return {(v.key, v.version_id) for v in store.list_versions(bucket)}


def test_forgetting_jobs_deletes_only_what_no_kept_job_references(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, {"a.txt": b"a1", "shared.txt": b"S", "b.txt": b"b1"})
    first = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"a2"})
    second = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"a3", "c.txt": b"S"})  # c.txt: a duplicate of job 1's content
    (source / "b.txt").unlink()
    third = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"a4"})
    fourth = back_up(sessions, store, bucket_id, source)
    before = versions_in(store, bucket_name)
    assert len(before) == 6  # a1 a2 a3 a4, S, b1

    with sessions() as session:
        policy = jobs_policy(session, "last-two", bucket_id, source, keep_last=2)
        dry = plan(session, policy.id)
        assert [(j.job_id, j.keep, j.reasons) for j in dry.jobs] == [
            (fourth, True, ("last snapshot",)),
            (third, True, ("last snapshot",)),
            (second, False, ("no rule keeps it",)),
            (first, False, ("no rule keeps it",)),
        ]
        doomed = sorted(v.key for v in dry.to_delete)
        assert doomed == ["a.txt", "a.txt", "b.txt"]  # never the shared content
        assert versions_in(store, bucket_name) == before  # a dry run changes nothing

        result = apply(session, store, policy.id, actor="test")
        assert result.run.forgotten_jobs == 2 and len(result.deleted) == 3
        assert result.bytes_freed == 6
    after = versions_in(store, bucket_name)
    assert len(after) == 3 and after < before
    with sessions() as session:
        for kept in (third, fourth):
            assert restore(session, store, kept, tmp_path / f"restore-{kept}").ok
        assert (tmp_path / f"restore-{third}/c.txt").read_bytes() == b"S"
        assert (tmp_path / f"restore-{third}/shared.txt").read_bytes() == b"S"
        with pytest.raises(Conflict, match="forgotten"):
            restore(session, store, first, tmp_path / "gone")
        again = apply(session, store, policy.id, actor="test")  # idempotent
        assert again.deleted == [] and again.run.forgotten_jobs == 0
        assert verify(session, store, bucket_id, checksum_all=True).clean

    # Content whose version was deleted is uploaded again when it comes back.
    write(source, {"a.txt": b"a1"})
    fifth = back_up(sessions, store, bucket_id, source)
    with sessions() as session:
        assert restore(session, store, fifth, tmp_path / "fifth").ok
    assert (tmp_path / "fifth/a.txt").read_bytes() == b"a1"


def test_retention_concurrent_with_a_backup_loses_nothing(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    contents = {f"f{i:04}.bin": f"content {i}".encode() for i in range(600)}
    old = tmp_path / "old"
    write(old, contents)
    first = back_up(sessions, store, bucket_id, old)
    write(old, {name: b"changed " + data for name, data in contents.items()})
    back_up(sessions, store, bucket_id, old)  # the first job's content is now only its own
    other = tmp_path / "other"
    write(other, contents)  # the same bytes, backed up from another source meanwhile

    with sessions() as session:
        policy = jobs_policy(session, "one", bucket_id, old)
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def backup() -> None:
        start.wait()
        results["job"] = back_up(sessions, store, bucket_id, other)

    def retention() -> None:
        start.wait()
        with sessions() as session:
            results["run"] = apply(session, store, policy.id, actor="test")

    threads = [threading.Thread(target=backup), threading.Thread(target=retention)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["run"].run.forgotten_jobs == 1  # type: ignore[attr-defined]
    with sessions() as session:
        restored = restore(session, store, int(results["job"]), tmp_path / "out")  # type: ignore[arg-type]
        assert restored.ok and restored.files == 600
        with pytest.raises(Conflict):
            restore(session, store, first, tmp_path / "gone")
        assert not verify(session, store, bucket_id).missing


def test_policy_stores_new_versions_under_object_lock(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    with unit_of_work(sessions) as session:
        locked_bucket = create_bucket(session, store, name=bucket_name, object_lock=True)
        plain = create_bucket(session, store, name=bucket_name + "-plain", object_lock=False)
        source = tmp_path / "src"
        write(source, {"ledger.db": b"v1"})
        policy = jobs_policy(
            session,
            "immutable",
            locked_bucket.id,
            source,
            lock_mode=LockMode.GOVERNANCE,
            lock_days=1,
            legal_hold=True,
        )
        with pytest.raises(Invalid) as no_days:
            create_policy(session, name="bad", lock_mode=LockMode.COMPLIANCE)
        assert no_days.value.field == "lock_days"
        with pytest.raises(Invalid) as not_lockable:
            create_policy(session, name="bad", bucket_id=plain.id, legal_hold=True)
        assert not_lockable.value.field == "legal_hold"

    first = back_up(sessions, store, locked_bucket.id, source)
    write(source, {"ledger.db": b"v2"})
    back_up(sessions, store, locked_bucket.id, source)
    with sessions() as session:
        versions = session.scalars(select(ObjectVersion).order_by(ObjectVersion.id)).all()
        assert [v.lock_mode for v in versions] == [LockMode.GOVERNANCE] * 2
        assert all(v.legal_hold and v.retain_until is not None for v in versions)
        reason = store.locked(bucket_name, "ledger.db", versions[0].version_id, datetime.now(UTC))
        assert reason is not None and reason.startswith("GOVERNANCE retention until")

        result = apply(session, store, policy.id, actor="test")  # would delete v1: locked
        assert list(result.locked) == [versions[0].version_id]
        assert result.deleted == [] and result.run.forgotten_jobs == 0
        assert restore(session, store, first, tmp_path / "still-there").ok


def test_a_run_cut_off_by_an_outage_leaves_things_consistent_and_the_next_finishes(
    sessions: sessionmaker[Session], private_s3: EmbeddedS3, tmp_path: Path
) -> None:
    from backup_operator.errors import Unavailable
    from backup_operator.storage import make_client

    store = ObjectStore(
        make_client(
            private_s3.endpoint,
            private_s3.access_key,
            private_s3.secret_key,
            secure=False,
            retries=0,
        )
    )
    source = tmp_path / "src"
    with sessions() as session:
        bucket_id = create_bucket(session, store, name="outage", object_lock=False).id
    write(source, {"a.txt": b"1"})
    first = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"2"})
    back_up(sessions, store, bucket_id, source)
    with sessions() as session:
        policy = jobs_policy(session, "one", bucket_id, source)
    private_s3.stop()
    with sessions() as session, pytest.raises(Unavailable):
        apply(session, store, policy.id, actor="test")
    with sessions() as session:  # nothing half done: the job is not forgotten
        assert plan(session, policy.id).jobs_to_forget == [first]
        interrupted = session.scalars(select(RetentionRun)).one()
        assert interrupted.finished_at is None
    private_s3.start()
    with sessions() as session:
        done = apply(session, store, policy.id, actor="test")
        assert done.run.forgotten_jobs == 1 and len(done.deleted) == 1
        assert verify(session, store, bucket_id).clean


def test_keep_min_successful_keeps_the_newest_successful_backups_whatever_the_rules_say(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, {"a.txt": b"1"})
    oldest = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"2"})
    older = back_up(sessions, store, bucket_id, source)
    write(source, {"a.txt": b"3"})
    newest = back_up(sessions, store, bucket_id, source)
    with sessions() as session:  # the newest one ended partially failed
        session.get_one(BackupJob, newest).status = JobStatus.PARTIALLY_FAILED
        session.commit()
        policy = jobs_policy(session, "floor", bucket_id, source, keep_min_successful=1)
        dry = plan(session, policy.id)
    # keep_last alone would keep only the partially failed one: not a good backup.
    assert [(j.job_id, j.keep, j.reasons) for j in dry.jobs] == [
        (newest, True, ("last snapshot",)),
        (older, True, ("keep_min_successful 1: newest successful #1",)),
        (oldest, False, ("no rule keeps it",)),
    ]
    with sessions() as session:
        result = apply(session, store, policy.id, actor="test")
        assert result.run.forgotten_jobs == 1
        forgotten = session.get_one(BackupJob, oldest).forgotten_at
    assert forgotten is not None


def test_keep_min_successful_is_for_jobs_policies_only(session: Session, bucket_id: int) -> None:
    with pytest.raises(Invalid) as error:
        create_policy(session, name="x", rules={"keep_last": 1}, keep_min_successful=2)
    assert error.value.field == "keep_min_successful"


def test_a_policy_requiring_a_dry_run_refuses_to_apply_until_one_follows_each_change(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, {"a.txt": b"1"})
    back_up(sessions, store, bucket_id, source)
    with unit_of_work(sessions) as session:
        policy = jobs_policy(session, "careful", bucket_id, source, require_dry_run=True)
        with pytest.raises(Conflict) as refused:
            apply(session, store, policy.id, actor="test")
        assert refused.value.field == "require_dry_run"
        dry_run(session, policy.id)
        apply(session, store, policy.id, actor="test")  # now allowed
        update_policy(session, policy.id, rules={"keep_last": 2})  # a change...
        with pytest.raises(Conflict):
            apply(session, store, policy.id, actor="test")  # ...needs a new dry run
        update_policy(session, policy.id, rules={"keep_last": 2})  # no change: no new one
        dry_run(session, policy.id)
        apply(session, store, policy.id, actor="test")

"""Packs (real PostgreSQL and S3 server): small files' contents stored many to an
object; restore of a job, a file and a prefix by ranged reads; duplicates still stored
once; verify checks each packed file and heals a lost pack at the next backup;
retention deletes a pack only when no kept file references it; locks and tags."""

from __future__ import annotations

import os
import random
import resource
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.models import BackupObject, LockMode, ObjectVersion
from backup_operator.catalog.retention import create_policy
from backup_operator.engine.restore import restore
from backup_operator.engine.verify import verify
from backup_operator.packformat import PACK_PREFIX
from backup_operator.services.buckets import create_bucket
from backup_operator.services.retention import apply
from backup_operator.services.units import unit_of_work
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore

from .conftest import back_up, keep_newest_job, write

THRESHOLD = 1024


def packed_backup(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, source: Path
) -> tuple[int, dict]:  # type: ignore[type-arg]
    return back_up(
        sessions, store, bucket_id, source, prefix="h", pack_threshold=THRESHOLD, pack_size=4096
    )


def objects_in(store: ObjectStore, bucket: str) -> list[str]:
    return sorted(v.key for v in store.list_versions(bucket))


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def tree(count: int, size: int = 300) -> dict[str, bytes]:
    return {f"d{i % 4}/f{i:03}": f"{i:03}".encode() * (size // 3) for i in range(count)}


def test_small_files_go_into_packs_and_come_back_by_ranged_reads(
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    files = tree(40)
    files["large.bin"] = b"L" * 5000  # over the threshold: an object of its own
    files["copy-of-f001"] = files["d1/f001"]  # a duplicate: stored once
    for name, content in files.items():
        write(source, name, content)
    job, stats = packed_backup(sessions, store, bucket_id, source)
    assert (stats.new, stats.duplicate) == (42, 1)
    stored = objects_in(store, bucket_name)
    packs = [key for key in stored if key.startswith(PACK_PREFIX)]
    assert "h/large.bin" in stored and len(stored) == len(packs) + 1
    assert 3 <= len(packs) <= 4  # 40 contents of 300 bytes in packs of about 4 KiB
    assert stats.uploads == len(stored)

    with sessions() as session:
        assert restore(session, store, job, tmp_path / "all").ok
        one = restore(session, store, job, tmp_path / "one", path="d2/f006")
        some = restore(session, store, job, tmp_path / "some", prefix="d3/")
    assert contents(tmp_path / "all") == files
    assert contents(tmp_path / "one") == {"d2/f006": files["d2/f006"]}
    assert one.files == 1 and some.files == 10
    assert contents(tmp_path / "some") == {k: v for k, v in files.items() if k.startswith("d3/")}

    with TestClient(create_app_for(settings)) as client:
        listed = {f["path"]: f for f in client.get("/files/", params={"job_id": job}).json()}
        small, large = listed["d0/f000"], listed["large.bin"]
        assert small["pack_offset"] is not None and large["pack_offset"] is None
        assert listed["copy-of-f001"]["pack_offset"] == listed["d1/f001"]["pack_offset"]
        objects = {o["key"] for o in client.get("/backup-objects/").json()}
        assert objects == set(stored)  # a pack is an object (under .packs/); packed files are not


def create_app_for(settings: Settings):  # type: ignore[no-untyped-def]
    from backup_operator.api.app import create_app

    return create_app(settings)


def test_verify_checks_each_packed_file_and_a_lost_pack_is_stored_again(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    for name, content in tree(12).items():
        write(source, name, content)
    first, _ = packed_backup(sessions, store, bucket_id, source)
    with sessions() as session:
        drift = verify(session, store, bucket_id, checksum_all=True)
        assert drift.clean and drift.checked_checksums >= 12  # each file, and each pack
        lost = session.execute(
            select(BackupObject.key, ObjectVersion.version_id)
            .join(ObjectVersion)
            .where(BackupObject.is_pack)
            .order_by(ObjectVersion.id)
            .limit(1)
        ).one()
    store.delete_version(bucket_name, lost.key, lost.version_id)  # behind the catalog's back
    with sessions() as session:
        drift = verify(session, store, bucket_id, repair=True)
        assert drift.missing == [(lost.key, lost.version_id)] and drift.repaired_missing == 1
    # Nothing changed in the source, yet the files whose content was lost are read again.
    again, stats = packed_backup(sessions, store, bucket_id, source)
    assert stats.uploads >= 1 and stats.bytes_read > 0
    with sessions() as session:
        assert verify(session, store, bucket_id, checksum_all=True).clean
        assert restore(session, store, again, tmp_path / "out").ok
    assert contents(tmp_path / "out") == tree(12)
    del first


def test_a_pack_goes_only_when_no_kept_file_references_any_of_it(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"a1" * 100)
    write(source, "b", b"b1" * 100)  # a and b share the first pack
    packed_backup(sessions, store, bucket_id, source)
    first_packs = set(objects_in(store, bucket_name))
    write(source, "a", b"a2" * 100)
    packed_backup(sessions, store, bucket_id, source)

    def forget_all_but_newest() -> list[str]:
        with sessions() as session:
            policy_id = keep_newest_job(
                session, bucket_id, source, name=f"newest-{datetime.now(UTC).timestamp()}"
            )
            # prune_waste 1: packs are only ever deleted whole here (rewrites: below)
            result = apply(session, store, policy_id, actor="t", prune_waste=1)
            return [v.key for v in result.deleted]

    assert forget_all_but_newest() == []  # b, still kept, is in the first pack
    assert first_packs <= set(objects_in(store, bucket_name))
    write(source, "b", b"b2" * 100)
    last, _ = packed_backup(sessions, store, bucket_id, source)
    assert sorted(forget_all_but_newest()) == sorted(first_packs)  # nothing references it now
    with sessions() as session:
        assert restore(session, store, last, tmp_path / "out").ok
        assert verify(session, store, bucket_id, checksum_all=True).clean
    assert contents(tmp_path / "out") == {"a": b"a2" * 100, "b": b"b2" * 100}


def test_a_pack_is_locked_as_long_as_its_longest_lock_and_carries_the_jobs_tags(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_name: str, tmp_path: Path
) -> None:
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=True)
        create_policy(
            session,
            name="short",
            bucket_id=bucket.id,
            key_prefix="h/a",
            lock_mode=LockMode.GOVERNANCE,
            lock_days=1,
            rules={"keep_last": 1},
        )
        create_policy(
            session,
            name="long",
            bucket_id=bucket.id,
            key_prefix="h/b",
            lock_mode=LockMode.GOVERNANCE,
            lock_days=3,
            rules={"keep_last": 1},
        )
    source = tmp_path / "src"
    write(source, "a", b"a" * 100)
    write(source, "b", b"b" * 100)
    from backup_operator.catalog import jobs
    from backup_operator.engine.backup import Options, run_backup

    with unit_of_work(sessions) as session:
        job = jobs.create_job(
            session,
            job_name="t",
            source_system=str(source),
            bucket_id=bucket.id,
            key_prefix="h",
            tags={"tier": "gold"},
            pack_threshold=THRESHOLD,
        )
        jobs.claim_job(session, job.id, worker_id="w")
    run_backup(sessions, store, job.id, lambda: None, Options())
    with sessions() as session:
        [pack] = session.execute(
            select(BackupObject.key, ObjectVersion).join(ObjectVersion).where(BackupObject.is_pack)
        ).all()
    key, version = pack
    days = (version.retain_until - datetime.now(UTC)).total_seconds() / 86400
    assert version.lock_mode is LockMode.GOVERNANCE and 2.9 < days <= 3
    assert store.locked(bucket_name, key, version.version_id, datetime.now(UTC))
    assert store.get_tags(bucket_name, key, version.version_id) == {"tier": "gold"}


class CrashingStore(ObjectStore):
    """The real store, which fails at one step of a prune, as a killed process would."""

    def __init__(self, store: ObjectStore, at: str) -> None:
        super().__init__(store.client)
        self.at = at

    def put(self, bucket, key, data, length, **options):  # type: ignore[no-untyped-def]
        answer = super().put(bucket, key, data, length, **options)
        if self.at == "after the new pack's upload":
            raise RuntimeError("crashed")
        return answer

    def delete_version(self, bucket: str, key: str, version_id: str) -> None:
        if self.at == "before the old pack's delete":
            raise RuntimeError("crashed")
        super().delete_version(bucket, key, version_id)


@pytest.mark.parametrize(
    "crash", [None, "after the new pack's upload", "before the old pack's delete"]
)
def test_a_mostly_unreferenced_pack_is_rewritten_and_a_crash_loses_nothing(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
    crash: str | None,
) -> None:
    source = tmp_path / "src"
    for i in range(10):
        write(source, f"f{i}", f"first {i} ".encode() * 20)
    back_up(sessions, store, bucket_id, source, pack_threshold=THRESHOLD)  # one pack
    [first_pack] = objects_in(store, bucket_name)
    for i in range(8):  # eight of the ten change: the first pack keeps two live contents
        write(source, f"f{i}", f"second {i} ".encode() * 20)
    last, _ = back_up(sessions, store, bucket_id, source, pack_threshold=THRESHOLD)
    expected = contents(source)
    with sessions() as session:
        policy_id = keep_newest_job(session, bucket_id, source)
        if crash is None:
            result = apply(session, store, policy_id, actor="t")
            assert result.pruned is not None and result.pruned.rewritten == 1
        else:
            with pytest.raises(RuntimeError, match="crashed"):
                apply(session, CrashingStore(store, crash), policy_id, actor="t")
            session.rollback()
    # Whatever happened, the kept job restores whole, and verify accounts for the rest.
    with sessions() as session:
        assert restore(session, store, last, tmp_path / "out").ok
        drift = verify(session, store, bucket_id, checksum_all=True)
        assert not drift.missing and not drift.mismatched
        if crash is not None:
            assert len(drift.untracked) == 1  # the object the crash left behind
            verify(session, store, bucket_id, repair=True, delete_untracked=True)
            apply(session, store, policy_id, actor="t")  # the next run finishes the work
        assert verify(session, store, bucket_id, checksum_all=True).clean
        assert restore(session, store, last, tmp_path / "again").ok
    assert contents(tmp_path / "out") == contents(tmp_path / "again") == expected
    assert first_pack not in objects_in(store, bucket_name)  # rewritten, then deleted
    assert len(objects_in(store, bucket_name)) == 2  # the second job's, and the rewrite


def _evict(root: Path) -> None:
    """Out of the page cache: the next read of these files goes to the disk."""
    os.sync()
    for path in root.rglob("*"):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(descriptor)


def test_small_files_from_the_disk_are_read_on_several_threads(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from backup_operator.engine import backup as engine

    rng = random.Random(3)
    contents = {f"d{i % 4}/f{i:03}": rng.randbytes(rng.randint(1, 3000)) for i in range(400)}
    for relative, content in contents.items():
        write(tmp_path / "cold", relative, content)
    _evict(tmp_path / "cold")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_inblock
    (tmp_path / "cold/d0/f000").read_bytes()
    if resource.getrusage(resource.RUSAGE_SELF).ru_inblock == before:
        pytest.skip("this filesystem serves evicted files from memory")
    _evict(tmp_path / "cold")
    readers: list[str] = []
    hash_file = engine.hash_file

    def noting_the_thread(path: bytes, keep_below: int = 0) -> object:
        readers.append(threading.current_thread().name)
        return hash_file(path, keep_below)

    monkeypatch.setattr(engine, "hash_file", noting_the_thread)
    job_id, stats = back_up(
        sessions, store, bucket_id, tmp_path / "cold", prefix="cold", pack_threshold=1 << 20,
        batch_files=100,
    )  # fmt: skip
    assert stats.new == 400 and stats.failed_files == 0
    # The first batch on the reading thread; once it came from the disk, the pool.
    assert {name.split("_")[0] for name in readers[:100]} == {"prepare"}
    assert {name.split("_")[0] for name in readers[100:]} == {"hash"}
    with sessions() as session:
        restored = restore(session, store, job_id, tmp_path / "out")
    assert restored.ok and restored.files == 400
    assert all((tmp_path / "out" / p).read_bytes() == c for p, c in contents.items())

    # From the page cache (just read): all on the reading thread.
    readers.clear()
    back_up(sessions, store, bucket_id, tmp_path / "cold", prefix="warm", pack_threshold=1 << 20,
            batch_files=100)  # fmt: skip
    assert len(readers) == 400 and {name.split("_")[0] for name in readers} == {"prepare"}

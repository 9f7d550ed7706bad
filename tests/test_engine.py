"""The backup engine against real PostgreSQL and S3: full and incremental backups,
deduplication, special files, restore, verify."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.catalog.models import BackupJob, File, ObjectVersion
from backup_operator.engine.backup import Options, run_backup
from backup_operator.engine.restore import restore
from backup_operator.engine.verify import verify
from backup_operator.errors import Conflict
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore, part_size_for

from .conftest import back_up, write


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    write(root, "docs/report.txt", b"quarterly numbers\n" * 100)
    write(root, "docs/copy-of-report.txt", b"quarterly numbers\n" * 100)  # a duplicate
    write(root, "photos/cat.jpg", os.urandom(50_000))
    write(root, "empty.bin", b"")
    write(root, "deep/a/b/c/d.txt", b"deep")
    (root / "empty-dir").mkdir()
    (root / "link-to-report").symlink_to(root / "docs/report.txt")
    os.mkfifo(root / "a-fifo")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.is_fifo()
    }


def keys(store: ObjectStore, bucket: str) -> list[tuple[str, str]]:
    return sorted((v.key, v.version_id) for v in store.list_versions(bucket))


def test_full_backup_stores_each_content_once(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    source: Path,
) -> None:
    _, stats = back_up(sessions, store, bucket_id, source)
    assert stats.files_seen == 5 and stats.new == 5
    assert stats.duplicate == 1 and stats.bytes_saved == 1800
    assert stats.uploads == 4
    assert stats.bytes_uploaded == 1800 + 50_000 + 0 + 4
    assert stats.problems["symlinks"].paths == ["link-to-report: not followed, not stored"]
    assert stats.problems["special_files"].count == 1
    assert stats.problems["empty_directories"].paths == ["empty-dir: not stored"]
    stored = [key for key, _ in keys(store, bucket_name)]
    # The first file of a content, in walk order, is the one stored.
    assert stored == [
        "host1/deep/a/b/c/d.txt",
        "host1/docs/copy-of-report.txt",
        "host1/empty.bin",
        "host1/photos/cat.jpg",
    ]


@pytest.mark.parametrize("pack_threshold", [0, 1024 * 1024], ids=["plain", "packs"])
def test_a_content_in_consecutive_batches_is_uploaded_once(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
    pack_threshold: int,
) -> None:
    # Batches of 2 files: each batch's contents are uploaded while the one before is
    # still being recorded; a copy in the next batch must not be uploaded again.
    # Files are read in name order: f01 and f02 share a content, f03 and f04, and so on.
    root = tmp_path / "source"
    for i in range(10):
        write(root, f"f{i:02}.bin", f"content {(i + 1) // 2}".encode() * 100)
    size = len(b"content 0" * 100)
    _, stats = back_up(
        sessions, store, bucket_id, root, batch_files=2, pack_threshold=pack_threshold
    )
    assert stats.new == 10 and stats.duplicate == 4
    assert stats.bytes_saved == 4 * size
    if pack_threshold:  # six contents, and each pack's index (under 100 bytes here)
        assert 6 * size < stats.bytes_uploaded < 7 * size
    else:
        assert stats.uploads == 6 and stats.bytes_uploaded == 6 * size
    with sessions() as session:
        recorded = {v.version_id for v in session.scalars(select(ObjectVersion))}
    assert {version for _, version in keys(store, bucket_name)} == recorded  # none untracked
    restored = tmp_path / "restored"
    with sessions() as session:
        job = session.scalars(select(BackupJob)).one()
        assert restore(session, store, job.id, restored).ok
    assert tree(restored) == tree(root)


@pytest.mark.parametrize("answer_lost", [False, True], ids=["refused", "answer-lost"])
def test_a_failed_record_removes_only_the_uploads_it_did_not_record(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer_lost: bool,
) -> None:
    # The fault is injected around the real registration (no component can be made to
    # lose exactly one COMMIT's answer here): it fails before committing, or after.
    from backup_operator.engine import backup as engine

    real = engine.register_files

    def failing(session: Session, *args: object, **kwargs: object) -> object:
        if answer_lost:  # the batch's COMMIT went through; its answer did not come back
            real(session, *args, **kwargs)  # type: ignore[arg-type]
            session.commit()
        raise RuntimeError("the database's answer was lost")

    monkeypatch.setattr(engine, "register_files", failing)
    with pytest.raises(RuntimeError):
        back_up(sessions, store, bucket_id, source)
    with sessions() as session:
        recorded = {v.version_id for v in session.scalars(select(ObjectVersion))}
        drift = verify(session, store, bucket_id)
    in_store = {version for _, version in keys(store, bucket_name)}
    assert in_store == recorded  # what was not recorded is gone; what was, stays
    assert bool(recorded) is answer_lost
    assert not drift.missing and not drift.untracked


def test_incremental_run_skips_unchanged_and_records_changes(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    source: Path,
    tmp_path: Path,
) -> None:
    first, _ = back_up(sessions, store, bucket_id, source)
    again, stats = back_up(sessions, store, bucket_id, source)
    assert (stats.unchanged, stats.new, stats.changed, stats.deleted) == (5, 0, 0, 0)
    assert stats.bytes_read == 0 and stats.uploads == 0
    assert stats.parent_job_id == first

    write(source, "docs/report.txt", b"revised numbers\n")
    write(source, "deep/a/b/c/d.txt", b"deeper")
    (source / "photos/cat.jpg").unlink()
    write(source, "new.txt", b"hello")
    third, stats = back_up(sessions, store, bucket_id, source)
    assert (stats.unchanged, stats.new, stats.changed, stats.deleted) == (2, 1, 2, 1)
    assert stats.bytes_read == 16 + 6 + 5  # each byte of what changed, once
    versions = [key for key, _ in keys(store, bucket_name)]
    assert versions.count("host1/deep/a/b/c/d.txt") == 2  # a new S3 version of the same key

    rehashed, stats = back_up(sessions, store, bucket_id, source, rehash=True)
    assert stats.unchanged == 5 and stats.uploads == 0 and stats.bytes_read > 0

    # Each job restores the source as it was then, duplicates resolved.
    with sessions() as session:
        old = restore(session, store, first, tmp_path / "first")
        new = restore(session, store, third, tmp_path / "third")
    assert old.ok and new.ok
    assert tree(tmp_path / "first")["docs/report.txt"] == b"quarterly numbers\n" * 100
    assert tree(tmp_path / "first")["docs/copy-of-report.txt"] == b"quarterly numbers\n" * 100
    assert "photos/cat.jpg" in tree(tmp_path / "first")
    assert tree(tmp_path / "third") == tree(source)
    assert again and rehashed


def test_restore_never_writes_outside_its_target(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    source: Path,
    tmp_path: Path,
) -> None:
    job_id, _ = back_up(sessions, store, bucket_id, source)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "docs").symlink_to(outside)  # a directory of the tree, pointing out
    (target / "deep").symlink_to(outside)  # the same, with folders to make below it
    (target / "empty.bin").symlink_to(outside / "empty.bin")  # a file of the tree, too
    with sessions() as session:
        session.execute(
            update(File)
            .where(File.path == "photos/cat.jpg")
            .values(path="photos/../../../escaped.txt", raw_path=None)
        )
        session.commit()
        result = restore(session, store, job_id, target, overwrite=True)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()
    assert sorted(result.failed) == [
        "deep/a/b/c/d.txt",
        "docs/copy-of-report.txt",
        "docs/report.txt",
        "photos/../../../escaped.txt",
    ]
    assert all("would be restored outside the target" in why for why in result.failed.values())
    # The symlinked file was replaced by the file itself, not written through.
    assert not (target / "empty.bin").is_symlink() and (target / "empty.bin").read_bytes() == b""


def test_restore_one_file_a_prefix_and_never_overwrites(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    source: Path,
    tmp_path: Path,
) -> None:
    job_id, _ = back_up(sessions, store, bucket_id, source)
    target = tmp_path / "target"
    with sessions() as session:
        one = restore(session, store, job_id, target, path="docs/report.txt")
        assert one.files == 1 and list(tree(target)) == ["docs/report.txt"]
        prefix = restore(session, store, job_id, target, prefix="deep/")
        assert prefix.files == 1
        write(target, "photos/cat.jpg", b"precious local edit")
        refused = restore(session, store, job_id, target)
        assert not refused.ok
        assert sorted(refused.refused_existing) == [
            "deep/a/b/c/d.txt",
            "docs/report.txt",
            "photos/cat.jpg",
        ]
        assert (target / "photos/cat.jpg").read_bytes() == b"precious local edit"
        forced = restore(session, store, job_id, target, overwrite=True)
        assert forced.ok and tree(target) == tree(source)
        mtime = (source / "docs/report.txt").stat().st_mtime_ns
        assert (target / "docs/report.txt").stat().st_mtime_ns == mtime


def test_restore_verifies_checksums(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    source: Path,
    tmp_path: Path,
) -> None:
    job_id, _ = back_up(sessions, store, bucket_id, source)
    with sessions() as session:
        session.execute(update(File).where(File.path == "deep/a/b/c/d.txt").values(sha256="0" * 64))
        session.commit()
        result = restore(session, store, job_id, tmp_path / "t")
    assert "checksum mismatch" in result.failed["deep/a/b/c/d.txt"]
    assert not (tmp_path / "t/deep/a/b/c/d.txt").exists()
    assert [p.name for p in (tmp_path / "t/deep/a/b/c").iterdir()] == []  # no temp file left


def test_only_completed_jobs_restore(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    with unit_of_work(sessions) as session:
        job = jobs.create_job(session, job_name="t", source_system="/x", bucket_id=bucket_id)
        with pytest.raises(Conflict):
            restore(session, store, job.id, tmp_path)


def test_odd_names_and_sockets(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    latin1 = os.path.join(os.fsencode(root), b"caf\xe9.txt")
    with open(latin1, "wb") as handle:
        handle.write(b"coffee")
    write(root, "ünïcode ✓.txt", b"fine")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "a.sock"))
    try:
        job_id, stats = back_up(sessions, store, bucket_id, root, prefix="")
    finally:
        server.close()
    assert stats.new == 2
    assert stats.problems["non_utf8_names"].paths == ["caf%E9.txt: stored under an escaped name"]
    assert stats.problems["special_files"].paths[0].startswith("a.sock")
    assert [k for k, _ in keys(store, bucket_name)] == ["caf%E9.txt", "ünïcode ✓.txt"]
    target = tmp_path / "back"
    with sessions() as session:
        assert restore(session, store, job_id, target).ok
    assert sorted(os.listdir(os.fsencode(target))) == sorted(
        [b"caf\xe9.txt", "ünïcode ✓.txt".encode()]
    )
    with open(os.path.join(os.fsencode(target), b"caf\xe9.txt"), "rb") as handle:
        assert handle.read() == b"coffee"


def test_large_file_goes_multipart(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    root = tmp_path / "big"
    content = os.urandom(40 * 1024 * 1024)
    write(root, "disk.img", content)
    job_id, stats = back_up(sessions, store, bucket_id, root, prefix="")
    assert stats.bytes_uploaded == len(content)
    with sessions() as session:
        etag = session.scalar(select(ObjectVersion.etag))
        assert restore(session, store, job_id, tmp_path / "out").ok
    assert etag is not None and etag.endswith("-3")  # three 16 MiB parts
    assert (tmp_path / "out/disk.img").read_bytes() == content
    # Beyond 160 GiB the parts grow so that 10,000 of them still hold the file.
    assert part_size_for(6 * 1024**3) == 16 * 1024**2
    assert part_size_for(500 * 1024**3) * 10_000 >= 500 * 1024**3


def test_missing_source_fails_with_the_reason(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="not a readable directory"):
        back_up(sessions, store, bucket_id, tmp_path / "nope")


def test_verify_reports_and_repairs_drift(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    source: Path,
) -> None:
    back_up(sessions, store, bucket_id, source)
    with sessions() as session:
        clean = verify(session, store, bucket_id, checksum_all=True)
    assert clean.clean and clean.checked_checksums == 4

    behind_our_back = keys(store, bucket_name)[0]
    store.delete_version(bucket_name, *behind_our_back)
    import io

    stray, _ = store.put(bucket_name, "host1/stray.bin", io.BytesIO(b"x"), 1)
    with sessions() as session:
        session.execute(
            update(ObjectVersion).where(ObjectVersion.size == 4).values(sha256="f" * 64)
        )
        session.commit()
        drift = verify(session, store, bucket_id, checksum_all=True)
        assert drift.missing == [behind_our_back]
        assert drift.untracked == [("host1/stray.bin", stray)]
        assert [m[0] for m in drift.mismatched] == ["host1/deep/a/b/c/d.txt"] or drift.missing
        assert not drift.clean
        repaired = verify(session, store, bucket_id, repair=True, delete_untracked=True)
        assert repaired.repaired_missing == 1 and repaired.deleted_untracked == 1
        again = verify(session, store, bucket_id)
    assert again.clean and again.catalog_versions == 3
    assert ("host1/stray.bin", stray) not in keys(store, bucket_name)


def test_cancel_stops_the_engine_at_the_next_batch(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    from backup_operator.services.scheduler import JobCancelled

    root = tmp_path / "many"
    for i in range(50):
        write(root, f"f{i:03}", str(i).encode())
    with unit_of_work(sessions) as session:
        job = jobs.create_job(session, job_name="t", source_system=str(root), bucket_id=bucket_id)
        jobs.claim_job(session, job.id, worker_id="test-worker")
    batches = []

    def heartbeat() -> None:
        batches.append(1)
        if len(batches) == 2:
            with unit_of_work(sessions) as session:
                jobs.cancel_job(session, job.id)
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        run_backup(sessions, store, job.id, heartbeat, Options(batch_files=10))
    with sessions() as session:
        assert session.scalar(select(BackupJob.status).where(BackupJob.id == job.id)) == "cancelled"
        recorded = session.scalars(select(File.path).where(File.job_id == job.id)).all()
    assert len(recorded) == 20  # two batches, then it stopped


def test_a_file_gone_before_it_is_read_is_reported(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    root = tmp_path / "vanishing"
    for i in range(25):
        write(root, f"f{i:02}", str(i).encode())

    def remove_after_first_batch(counters: dict) -> None:
        # Listed already, not read yet: while the first batch is recorded, the second
        # is sent and the third read; the fifth is read after.
        (root / "f24").unlink(missing_ok=True)

    job_id, stats = back_up(
        sessions, store, bucket_id, root, batch_files=5, progress=remove_after_first_batch
    )
    assert stats.new == 24
    assert stats.problems["unreadable"].paths == ["f24: No such file or directory"]
    # Not success: the job ended partially failed, and says which file and why.
    assert stats.failed_files == 1
    with sessions() as session:
        job = session.get_one(BackupJob, job_id)
        assert job.status == "partially_failed"
        page = jobs.list_failures(session, job_id, after=None, limit=10)
    assert [(f.path, f.kind, f.reason) for f in page.items] == [
        ("f24", "unreadable", "No such file or directory")
    ]


def test_a_file_that_keeps_changing_is_not_stored(tmp_path: Path) -> None:
    import threading

    from backup_operator.engine.hashing import ChangedWhileReading, hash_file

    path = tmp_path / "growing.log"
    path.write_bytes(os.urandom(8 * 1024 * 1024))
    stop = threading.Event()

    def append() -> None:
        with path.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 1024)
                handle.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with pytest.raises(ChangedWhileReading):
            hash_file(os.fsencode(path))
    finally:
        stop.set()
        writer.join()
    assert hash_file(os.fsencode(path)).size == path.stat().st_size  # settled: hashed


class ObservedStore(ObjectStore):
    """The real store, noting the bytes of large uploads under way at once."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store.client)
        self.lock = threading.Lock()
        self.under_way = 0
        self.most = 0

    def put(self, bucket: str, key: str, data: Any, length: int, **options: Any) -> Any:
        with self.lock:
            self.under_way += length
            self.most = max(self.most, self.under_way)
        try:
            time.sleep(0.05)  # a slower store: uploads overlap as far as they may
            return super().put(bucket, key, data, length, **options)
        finally:
            with self.lock:
                self.under_way -= length


@pytest.mark.parametrize("memory_mib", [128, 256])
def test_large_uploads_at_once_stay_within_the_memory_budget(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
    memory_mib: int,
) -> None:
    for i in range(40):
        write(tmp_path / "src", f"big{i:02}.bin", os.urandom(2 * 1024 * 1024))
    observed = ObservedStore(store)
    _, stats = back_up(
        sessions, observed, bucket_id, tmp_path / "src", memory_bytes=memory_mib * 1024 * 1024
    )
    assert stats.new == 40 and stats.uploads == 40
    # 128 MiB: 13 MiB of large files under upload at once (a third of what packs and
    # parts in flight leave), so 6 of these; 256 MiB: as many as the 16 upload threads.
    most = 6 if memory_mib == 128 else 16
    assert most * 2 * 1024 * 1024 >= observed.most > (most - 4) * 2 * 1024 * 1024


MIB = 1024 * 1024


def bytes_read_by_this_process() -> int:
    """What this process has read (files and sockets), from the kernel's counter."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_a_large_file_unlike_any_stored_is_read_once(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    root = tmp_path / "source"
    write(root, "disk.img", os.urandom(8 * MIB))
    write(root, "log.bin", os.urandom(5 * MIB))
    before = bytes_read_by_this_process()
    _, stats = back_up(sessions, store, bucket_id, root)
    read = bytes_read_by_this_process() - before
    assert stats.new == 2 and stats.uploads == 2 and stats.bytes_read == 13 * MIB
    assert 13 * MIB <= read < 1.2 * 13 * MIB  # hashed, then read again to upload: twice
    # Changed: one to another size (read once again), one to the same size (hashed
    # first: it could be a duplicate of stored content).
    write(root, "disk.img", os.urandom(9 * MIB))
    write(root, "log.bin", os.urandom(5 * MIB))
    before = bytes_read_by_this_process()
    job_id, stats = back_up(sessions, store, bucket_id, root)
    read = bytes_read_by_this_process() - before
    assert stats.changed == 2 and stats.uploads == 2
    assert (9 + 2 * 5) * MIB <= read < 1.2 * (9 + 2 * 5) * MIB
    with sessions() as session:
        assert restore(session, store, job_id, tmp_path / "out").ok
    assert tree(tmp_path / "out") == tree(root)


@pytest.mark.parametrize("batch_files", [1, 1000], ids=["batch-each", "one-batch"])
def test_large_copies_are_uploaded_once(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
    batch_files: int,
) -> None:
    # One batch per file: a copy is sent while the first of its content (read once,
    # its hash known only when its upload ends) may still be uploading.
    content = os.urandom(3 * MIB)
    root = tmp_path / "source"
    for name in ("a/one.bin", "b/two.bin", "c/three.bin"):
        write(root, name, content)
    write(root, "d/other.bin", os.urandom(3 * MIB))  # same size, another content
    _, stats = back_up(sessions, store, bucket_id, root, batch_files=batch_files)
    assert stats.new == 4 and stats.duplicate == 2 and stats.uploads == 2
    write(tmp_path / "later", "four.bin", content)  # a copy in a later job
    _, stats = back_up(sessions, store, bucket_id, tmp_path / "later")
    assert stats.duplicate == 1 and stats.uploads == 0
    assert [key for key, _ in keys(store, bucket_name)] == ["host1/a/one.bin", "host1/d/other.bin"]


def test_a_copy_of_either_of_two_large_files_of_one_size_sent_before_is_not_uploaded(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    # Batches of two: f1 and f2 (one size, two contents) upload as they are hashed;
    # f3, a copy of f1, comes in the next batch while both may still be uploading.
    root = tmp_path / "source"
    first = os.urandom(3 * MIB)
    write(root, "f1.bin", first)
    write(root, "f2.bin", os.urandom(3 * MIB))
    write(root, "f3.bin", first)
    _, stats = back_up(sessions, store, bucket_id, root, batch_files=2)
    assert stats.new == 3 and stats.duplicate == 1 and stats.uploads == 2


class ChangingStore(ObjectStore):
    """The real store; as each of the first `times` uploads starts, the file is changed."""

    def __init__(self, store: ObjectStore, change: Any, times: int) -> None:
        super().__init__(store.client)
        self.change = change
        self.times = times

    def put(self, bucket: str, key: str, data: Any, length: int, **options: Any) -> Any:
        if self.times > 0:
            self.times -= 1
            self.change()
        return super().put(bucket, key, data, length, **options)


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_large_file_changed_as_it_uploads_is_sent_again_as_it_is_then(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
    change: str,
) -> None:
    path = write(tmp_path / "source", "db.img", os.urandom(4 * MIB))

    def changing() -> None:
        if change == "grows":
            with path.open("ab") as handle:
                handle.write(os.urandom(MIB))
        else:  # the upload then reads too little, which is no outage
            os.truncate(path, 3 * MIB)

    changing_store = ChangingStore(store, changing, times=1)
    job_id, stats = back_up(sessions, changing_store, bucket_id, tmp_path / "source")
    assert "changed_while_reading" not in stats.problems
    assert stats.new == 1 and stats.uploads == 1
    assert len(keys(store, bucket_name)) == 1  # the first upload removed
    with sessions() as session:
        assert restore(session, store, job_id, tmp_path / "out").ok
    assert (tmp_path / "out/db.img").read_bytes() == path.read_bytes()


def test_a_large_file_that_keeps_changing_as_it_uploads_is_reported_not_stored(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "source", "busy.log", os.urandom(2 * MIB))

    def grow() -> None:
        with path.open("ab") as handle:
            handle.write(b"another line\n")

    _, stats = back_up(
        sessions, ChangingStore(store, grow, times=100), bucket_id, tmp_path / "source"
    )
    assert stats.problems["changed_while_reading"].paths == [
        "busy.log: changed while being read, 3 times"
    ]
    assert stats.failed_files == 1 and stats.uploads == 0
    assert keys(store, bucket_name) == []  # nothing left under a content it is not

"""A catalog that grows with change (real PostgreSQL and S3 server): an unchanged
backup adds no file rows yet lists and restores its whole tree; duplicates are counted
once; diffs and trees as of a time; two backups of one source at once; retention while
a backup relies on its parent's files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.catalog import jobs
from backup_operator.catalog.models import File, JobStatus
from backup_operator.catalog.stats import JobStats
from backup_operator.engine.backup import run_backup
from backup_operator.engine.restore import restore
from backup_operator.services.retention import apply
from backup_operator.services.units import unit_of_work
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore

from .conftest import back_up, keep_newest_job, write


def rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(File)) or 0)


def tree_of(client: TestClient, job_id: int) -> dict[str, str]:
    """path -> change, over every page of the job's listing."""
    found: dict[str, str] = {}
    after: str | None = None
    while True:
        params: dict[str, object] = {"job_id": job_id, "limit": 7}
        if after is not None:
            params["after"] = after
        response = client.get("/files/", params=params)
        assert response.status_code == 200, response.json()
        found.update({f["path"]: f["change"] for f in response.json()})
        after = response.headers.get("x-next-after")
        if after is None:
            return found


def restored(session: Session, store: ObjectStore, job_id: int, target: Path) -> dict[str, bytes]:
    result = restore(session, store, job_id, target)
    assert result.ok, result.as_dict() if hasattr(result, "as_dict") else result
    return {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}


def test_an_unchanged_backup_adds_no_rows_and_still_has_its_whole_tree(
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    for i in range(30):
        write(source, f"d{i % 3}/f{i}", f"content {i}".encode())
    first, _ = back_up(sessions, store, bucket_id, source)
    after_first = rows(sessions)
    second, stats = back_up(sessions, store, bucket_id, source)
    assert rows(sessions) == after_first == 30
    assert (stats.files_seen, stats.unchanged, stats.new) == (30, 30, 0)
    with TestClient(create_app(settings)) as client:
        assert tree_of(client, second) == {f"d{i % 3}/f{i}": "unchanged" for i in range(30)}
        assert set(tree_of(client, first).values()) == {"new"}
        prefix = client.get("/files/", params={"job_id": second, "path_prefix": "d1/"}).json()
        assert sorted(f["path"] for f in prefix) == sorted(f"d1/f{i}" for i in range(1, 30, 3))
    with sessions() as session:
        assert restored(session, store, second, tmp_path / "out") == {
            f"d{i % 3}/f{i}": f"content {i}".encode() for i in range(30)
        }

    # One change, one deletion: two rows (the new state, the record of the deletion).
    write(source, "d0/f0", b"changed")
    (source / "d1/f1").unlink()
    third, stats = back_up(sessions, store, bucket_id, source)
    assert rows(sessions) == 32
    assert (stats.changed, stats.deleted, stats.unchanged) == (1, 1, 28)
    with TestClient(create_app(settings)) as client:
        listing = tree_of(client, third)
        assert (listing["d0/f0"], listing["d1/f1"], listing["d2/f2"]) == (
            "changed",
            "deleted",
            "unchanged",
        )
        assert len(listing) == 30
        assert len(tree_of(client, second)) == 30  # older jobs keep their own tree
    with sessions() as session:
        back = restored(session, store, third, tmp_path / "out3")
        assert back["d0/f0"] == b"changed" and "d1/f1" not in back and len(back) == 29
        assert restored(session, store, second, tmp_path / "out2")["d0/f0"] == b"content 0"


def test_duplicates_are_counted_once_and_never_exceed_what_was_read(
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"same content")
    write(source, "copy-of-a", b"same content")
    write(source, "b", b"bbbb")
    write(source, "gone", b"gggg")
    _, first = back_up(sessions, store, bucket_id, source)
    assert (first.duplicate, first.bytes_saved) == (1, 12)
    (source / "gone").unlink()
    write(source, "b", b"bbbb2")
    _, second = back_up(sessions, store, bucket_id, source)
    # Nothing of the second backup was a duplicate: unchanged files are not, nor is the
    # deleted one.
    assert (second.duplicate, second.bytes_saved, second.unchanged) == (0, 0, 2)
    write(source, "another-copy", b"bbbb2")
    _, third = back_up(sessions, store, bucket_id, source)
    assert (third.duplicate, third.bytes_saved, third.uploads) == (1, 5, 0)
    read = sum(s.bytes_read for s in (first, second, third))
    with TestClient(create_app(settings)) as client:
        summary = client.get("/files/duplicates/summary", params={"bucket_id": bucket_id}).json()
        assert summary == {"groups": 2, "duplicate_files": 2, "bytes_saved": 17}
        assert summary["bytes_saved"] <= read
        groups = client.get("/files/duplicates", params={"bucket_id": bucket_id}).json()
        assert sorted((g["duplicates"], g["bytes_saved"]) for g in groups) == [(1, 5), (1, 12)]


def test_diff_between_jobs_and_a_tree_as_of_a_time(
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    for name in ("keep", "change", "remove"):
        write(source, name, name.encode())
    first, _ = back_up(sessions, store, bucket_id, source)
    between = datetime.now(UTC)
    write(source, "change", b"changed")
    write(source, "add", b"added")
    (source / "remove").unlink()
    second, _ = back_up(sessions, store, bucket_id, source)
    third, _ = back_up(sessions, store, bucket_id, source)  # unchanged
    with TestClient(create_app(settings)) as client:

        def diff(job: int, against: int, limit: int = 100) -> dict[str, tuple[str, str | None]]:
            found: dict[str, tuple[str, str | None]] = {}
            url = f"/backup-jobs/{job}/diff?against={against}&limit={limit}"
            while url:
                response = client.get(url)
                assert response.status_code == 200, response.json()
                for d in response.json():
                    state = d["after"] or d["before"]
                    found[d["path"]] = (d["change"], state["sha256"][:8])
                url = response.links.get("next", {}).get("url")
            return found

        forward = diff(third, first)
        assert {path: change for path, (change, _) in forward.items()} == {
            "add": "added",
            "change": "changed",
            "remove": "deleted",
        }
        assert diff(third, first, limit=1) == forward  # paged, the same
        backward = diff(first, second)
        assert {path: change for path, (change, _) in backward.items()} == {
            "add": "deleted",
            "change": "changed",
            "remove": "added",
        }
        assert diff(third, second) == {}
        assert client.get(f"/backup-jobs/{third}/diff").status_code == 422

        def as_of(moment: datetime) -> list[str] | dict:
            response = client.get(
                "/files/",
                params={
                    "bucket_id": bucket_id,
                    "source_system": str(source),
                    "as_of": moment.isoformat(),
                },
            )
            body = response.json()
            return sorted(f["path"] for f in body) if response.status_code == 200 else body

        assert as_of(between) == ["change", "keep", "remove"]
        assert as_of(datetime.now(UTC)) == ["add", "change", "keep"]  # the third, unchanged
        too_early = as_of(datetime(2000, 1, 1, tzinfo=UTC))
        assert isinstance(too_early, dict) and too_early["detail"][0]["loc"] == ["as_of"]
        missing = client.get("/files/", params={"as_of": between.isoformat()})
        assert missing.status_code == 422


def start(sessions: sessionmaker[Session], bucket_id: int, source: Path, worker: str) -> int:
    with unit_of_work(sessions) as session:
        job = jobs.create_job(
            session,
            job_name=worker,
            source_system=str(source),
            bucket_id=bucket_id,
            key_prefix="host1",
        )
        jobs.claim_job(session, job.id, worker_id=worker)
        return job.id


def finish(sessions: sessionmaker[Session], job_id: int, worker: str, stats: JobStats) -> None:
    with unit_of_work(sessions) as session:
        assert jobs.finish_job(
            session, job_id, worker_id=worker, status=jobs.outcome(stats), stats=stats
        )


def test_two_backups_of_one_source_at_once_each_keep_what_they_saw(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_id: int, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"a1")
    write(source, "b", b"b1")
    back_up(sessions, store, bucket_id, source)
    slow, fast = (
        start(sessions, bucket_id, source, "slow"),
        start(sessions, bucket_id, source, "fast"),
    )
    write(source, "a", b"a2")
    slow_stats = run_backup(sessions, store, slow, lambda: None)  # sees a2, b1
    write(source, "a", b"a3")
    (source / "b").unlink()
    fast_stats = run_backup(sessions, store, fast, lambda: None)  # sees a3, no b
    finish(sessions, fast, "fast", fast_stats)
    with sessions() as session:  # "slow", still running, wrote a2 for the same position
        assert restored(session, store, fast, tmp_path / "fast-alone") == {"a": b"a3"}
    finish(sessions, slow, "slow", slow_stats)  # completes after: rebased onto "fast"
    with sessions() as session:
        assert restored(session, store, slow, tmp_path / "slow") == {"a": b"a2", "b": b"b1"}
        assert restored(session, store, fast, tmp_path / "fast") == {"a": b"a3"}
    # The next backup's parent is the newest, "slow": against it, a changed, b deleted.
    latest, stats = back_up(sessions, store, bucket_id, source)
    assert (stats.parent_job_id, stats.changed, stats.deleted) == (slow, 1, 1)
    with sessions() as session:
        assert restored(session, store, latest, tmp_path / "latest") == {"a": b"a3"}


def test_forgetting_a_running_backups_parent_keeps_what_it_relies_on(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"a1")
    write(source, "b", b"b1")
    back_up(sessions, store, bucket_id, source)
    write(source, "a", b"a2")
    back_up(sessions, store, bucket_id, source)
    running = start(sessions, bucket_id, source, "runner")
    stats = run_backup(sessions, store, running, lambda: None)  # a2 unchanged: no row
    write(source, "a", b"a3")
    back_up(sessions, store, bucket_id, source)  # completes first, a3
    with sessions() as session:
        result = apply(session, store, keep_newest_job(session, bucket_id, source), actor="test")
        assert result.run.forgotten_jobs == 2
        # a1 went; a2, which the running backup has as unchanged, stays.
        assert sorted(v.version.size for v in result.deleted) == [2]
    finish(sessions, running, "runner", stats)
    with sessions() as session:
        assert restored(session, store, running, tmp_path / "out") == {"a": b"a2", "b": b"b1"}


def test_a_failed_backups_files_never_show_in_the_next_ones_tree(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
    settings: Settings,
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"a1")
    back_up(sessions, store, bucket_id, source)
    write(source, "b", b"b1")
    failed = start(sessions, bucket_id, source, "doomed")
    run_backup(sessions, store, failed, lambda: None)  # wrote b, for the next position
    with unit_of_work(sessions) as session:
        assert jobs.finish_job(
            session, failed, worker_id="doomed", status=JobStatus.FAILED, error="test"
        )
    write(source, "b", b"b2")
    latest, stats = back_up(sessions, store, bucket_id, source)  # takes that position
    assert stats.new == 1
    with TestClient(create_app(settings)) as client:
        assert tree_of(client, latest) == {"a": "unchanged", "b": "new"}
    with sessions() as session:
        assert restored(session, store, latest, tmp_path / "out") == {"a": b"a1", "b": b"b2"}


def test_retention_keeps_a_content_a_running_backup_has_just_found_a_duplicate_of(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    write(source, "a", b"first")
    back_up(sessions, store, bucket_id, source)
    write(source, "a", b"second")
    back_up(sessions, store, bucket_id, source)  # "first" is in the oldest tree only
    write(source, "b", b"first")  # …until a new file has it again
    running = start(sessions, bucket_id, source, "runner")
    stats = run_backup(sessions, store, running, lambda: None)  # b: a duplicate, no upload
    with sessions() as session:
        result = apply(session, store, keep_newest_job(session, bucket_id, source), actor="test")
        assert result.run.forgotten_jobs == 1
        assert result.deleted == []  # the running backup holds "first"
    finish(sessions, running, "runner", stats)
    with sessions() as session:
        out = restored(session, store, running, tmp_path / "out")
        assert out == {"a": b"second", "b": b"first"}

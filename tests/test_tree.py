"""A job's tree folder by folder (catalog.tree), against PostgreSQL: entries in byte
order, folders once however many files are under them, change marks relative to the
job's parent, keyset pages that neither skip nor repeat an entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs, tree
from backup_operator.errors import Conflict
from backup_operator.storage import ObjectStore

from .conftest import back_up, write


def listing(session: Session, job_id: int, path: str, limit: int = 100) -> list[str]:
    job = jobs.get_job(session, job_id)
    shown, after = [], None
    while True:
        page = tree.folder(session, job, path, after=after, limit=limit)
        shown += [f"{e.key}:{e.change.value if e.change else 'folder'}" for e in page.entries]
        if page.more_after is None:
            return shown
        after = page.more_after


def test_a_folder_lists_its_entries_once_in_byte_order_with_what_changed(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "src"
    names = ["a-b", "a/x", "a/y/z", "a0", "b%_c", "b/q", "top.txt", "gone.txt"]
    for name in names:
        write(source, name, name.encode())
    for index in range(30):  # a folder with many files below it is one entry
        write(source, f"many/{index:02}/f", b"f")
    first, _ = back_up(sessions, store, bucket_id, source)
    write(source, "top.txt", b"changed")
    (source / "gone.txt").unlink()
    write(source, "a/new", b"new")
    second, _ = back_up(sessions, store, bucket_id, source)

    with sessions() as session:
        root = [
            "a/:folder",
            "a-b:unchanged",
            "a0:unchanged",
            "b/:folder",
            "b%_c:unchanged",
            "gone.txt:deleted",
            "many/:folder",
            "top.txt:changed",
        ]
        # Byte order ('-' < '/' < '0'), as S3 lists keys; every page size gives the same.
        expected = sorted(root, key=lambda e: e.split(":")[0].encode())
        assert listing(session, second, "") == expected
        assert listing(session, second, "", limit=1) == expected
        assert listing(session, second, "", limit=3) == expected
        assert listing(session, second, "a") == ["new:new", "x:unchanged", "y/:folder"]
        assert listing(session, second, "/a/y/") == ["z:unchanged"]
        assert listing(session, second, "many", limit=7) == [f"{i:02}/:folder" for i in range(30)]
        assert listing(session, second, "b%") == []  # a LIKE pattern is a name, not a pattern
        assert listing(session, first, "a") == ["x:new", "y/:folder"]
        assert "gone.txt:new" in listing(session, first, "")


def test_a_job_that_has_not_completed_has_no_tree_to_browse_yet(
    session: Session, bucket_id: int
) -> None:
    job = jobs.create_job(session, job_name="j", source_system="/x", bucket_id=bucket_id)
    with pytest.raises(Conflict, match="pending: only a completed job") as refused:
        tree.folder(session, job, "", after=None, limit=10)
    assert refused.value.field == "job_id"

"""A job's tree as a file manager sees it: one folder's entries, keyset-paged by name,
and where each file's content is stored (its own S3 version, or a range of a pack).

A folder is read by probing the index of a source's paths (source_id, path in byte
order) once per entry, in one statement: the first path past the last entry, then, for
a sub-folder, the first path past everything under it. A page of N entries costs N
probes, whatever the number of files below them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, aliased

from ..errors import Conflict
from . import lineage
from .models import BackupJob, BackupObject, Bucket, File, FileChange, ObjectVersion

# Just past every path under "folder/" in byte order: '0' follows '/'.
PAST_FOLDER = "0"
# Just past one path: no path holds a character below U+0001 (PostgreSQL refuses NUL).
PAST_PATH = "\x01"
# Past every path: the last character there is.
PAST_ALL = "\U0010ffff"


@dataclass(frozen=True)
class Entry:
    name: str
    file: File | None  # None: a folder
    change: FileChange | None = None  # a file's, relative to the job's parent

    @property
    def is_folder(self) -> bool:
        return self.file is None

    @property
    def key(self) -> str:
        """The keyset token of the entry: its name, and a slash after a folder's."""
        return self.name + "/" if self.is_folder else self.name


@dataclass(frozen=True)
class Folder:
    path: str  # "" for the root, else "a/b/"
    entries: list[Entry]
    more_after: str | None  # the token of the next page, if there is one


# One probe of the index of a source's paths per entry, in one statement: the first
# path of the tree at or past `lower` under the folder, then, from each entry, the
# first past it (past everything under it, for a sub-folder). Only the states the job
# sees: open at its position, and deletions only if it found them.
_ENTRIES = text("""
    WITH RECURSIVE walk AS (
        (SELECT path, id FROM files
         WHERE source_id = :source AND path ~>=~ :lower AND path ~<~ :upper
           AND first_seq <= :seq AND (end_seq IS NULL OR end_seq > :seq)
           AND (change <> 'deleted' OR job_id = :job)
         ORDER BY path USING ~<~ LIMIT 1)
        UNION ALL
        SELECT next.path, next.id FROM walk CROSS JOIN LATERAL (
            SELECT path, id FROM files
            WHERE source_id = :source AND path ~<~ :upper
              AND path ~>=~ CASE
                  WHEN strpos(substr(walk.path, :skip + 1), '/') > 0
                  THEN :prefix || split_part(substr(walk.path, :skip + 1), '/', 1) || :past_folder
                  ELSE walk.path || :past_path END
              AND first_seq <= :seq AND (end_seq IS NULL OR end_seq > :seq)
              AND (change <> 'deleted' OR job_id = :job)
            ORDER BY path USING ~<~ LIMIT 1) AS next
    )
    SELECT path, id FROM walk LIMIT :count
""")


def folder_path(path: str) -> str:
    path = path.strip("/")
    return path + "/" if path else ""


def folder(session: Session, job: BackupJob, path: str, *, after: str | None, limit: int) -> Folder:
    """A page of the folder's entries; a job's tree is fixed once it completed."""
    if job.lineage_seq is None:
        raise Conflict(
            f"job {job.id} is {job.status.value}: only a completed job has a tree to browse",
            field="job_id",
        )
    prefix = folder_path(path)
    lower = prefix
    if after:
        lower = prefix + (after[:-1] + PAST_FOLDER if after.endswith("/") else after + PAST_PATH)
    found = session.execute(
        _ENTRIES,
        {
            "source": job.source_id,
            "seq": job.lineage_seq,
            "job": job.id,
            # Under "a/b/" are the paths from "a/b/" up to "a/b0": a range of the index.
            "upper": prefix[:-1] + PAST_FOLDER if prefix else PAST_ALL,
            "prefix": prefix,
            "skip": len(prefix),
            "lower": lower,
            "past_folder": PAST_FOLDER,
            "past_path": PAST_PATH,
            "count": limit + 1,
        },
    ).all()
    files = {
        row.id: (row, change)
        for row, change in session.execute(
            select(File, lineage.change_in(job)).where(
                File.id.in_([file_id for path, file_id in found if "/" not in path[len(prefix) :]])
            )
        )
    }
    entries = []
    for entry_path, file_id in found:
        name, slash, _ = entry_path[len(prefix) :].partition("/")
        if slash:
            entries.append(Entry(name, None))
        else:
            row, change = files[file_id]
            entries.append(Entry(name, row, FileChange(change)))
    more = entries[limit - 1].key if len(entries) > limit else None
    return Folder(prefix, entries[:limit], more)


@dataclass(frozen=True)
class Stored:
    """A file of a tree and where its content is (None where it is not stored)."""

    path: str
    raw_path: bytes | None
    size: int
    sha256: str
    mtime_ns: int | None
    mode: int | None
    bucket: str | None
    key: str | None
    version_id: str | None
    offset: int | None = None  # in a pack: where its content starts
    object_id: int | None = None  # the backup object (a pack's, for a packed file)


def stored_files(
    session: Session, job: BackupJob, *, prefix: str | None = None, path: str | None = None
) -> Iterator[Stored]:
    """The job's files (one, or those under a prefix), by id, duplicates resolved to
    their canonical content."""
    canonical = aliased(File)
    version_id = func.coalesce(File.object_version_id, canonical.object_version_id)
    query = (
        select(
            File.path,
            File.raw_path,
            File.size,
            File.sha256,
            File.mtime_ns,
            File.mode,
            Bucket.name,
            BackupObject.key,
            ObjectVersion.version_id,
            func.coalesce(canonical.pack_offset, File.pack_offset),
            BackupObject.id,
        )
        .outerjoin(canonical, canonical.id == File.canonical_file_id)
        .outerjoin(
            ObjectVersion, (ObjectVersion.id == version_id) & ObjectVersion.deleted_at.is_(None)
        )
        .outerjoin(BackupObject, BackupObject.id == ObjectVersion.object_id)
        .outerjoin(Bucket, Bucket.id == BackupObject.bucket_id)
        .where(lineage.in_tree(session, job))
        .order_by(File.id)
    )
    if path is not None:
        query = query.where(File.path == path.strip("/"))
    elif prefix:
        query = query.where(File.path.startswith(prefix.lstrip("/"), autoescape=True))
    for row in session.execute(query.execution_options(yield_per=1000)):
        yield Stored(*cast(tuple[Any, ...], row))

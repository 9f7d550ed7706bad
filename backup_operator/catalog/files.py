"""Original files and duplicate detection.

Within a bucket each content (SHA-256) has exactly one canonical file; every other
file with that content is a duplicate linked to it and is never uploaded. The partial
unique index `uq_files_canonical_content` is the arbiter: of two concurrent
registrations of the same new content, one insert wins and the other, after waiting
for it, becomes its duplicate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session, aliased

from ..errors import Conflict, Invalid
from . import lineage
from .arrays import in_ids
from .jobs import as_utc, get_job
from .locks import lock_bucket_for_retention
from .models import LARGE_CONTENTS, SIZES_INDEXED_FROM, File, FileChange
from .pages import Page, keyset, page_of, scalar_page
from .raw import named_rows
from .rows import get_row
from .stats import JobStats

# A registered file: a `File`, or a result row (named tuple) with the same attributes.
FileRecord = Any

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BATCH = 50_000


@dataclass(frozen=True)
class FileIn:
    path: str
    size: int
    sha256: str
    mtime: datetime | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    raw_path: bytes | None = None
    change: FileChange = FileChange.NEW
    mode: int | None = None


def _validated(files: Sequence[FileIn]) -> list[FileIn]:
    if not files:
        raise Invalid("at least one file is needed", field="files")
    if len(files) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} files per batch", field="files")
    seen: set[str] = set()
    out = []
    for index, item in enumerate(files):
        path = item.path.lstrip("/")
        if not path or "\x00" in path:
            raise Invalid("path must be non-empty and contain no NUL", field=f"files[{index}].path")
        if path in seen:
            raise Invalid(f"path {path!r} appears twice in the batch", field=f"files[{index}].path")
        seen.add(path)
        sha = item.sha256.lower()
        if not SHA256.match(sha):
            raise Invalid("must be 64 hexadecimal characters", field=f"files[{index}].sha256")
        if item.size < 0:
            raise Invalid("must not be negative", field=f"files[{index}].size")
        mtime = as_utc(item.mtime)
        if (path, sha, mtime) != (item.path, item.sha256, item.mtime):  # copies are costly
            item = replace(item, path=path, sha256=sha, mtime=mtime)
        out.append(item)
    return out


# psycopg placeholders: the bulk path runs on the session's connection directly, with the
# arrays sent in binary (a text array is quoted element by element in Python: three times
# the cost) and rows answered as named tuples.
_BATCH_ROWS = """
    FROM unnest(%(paths)b::text[], %(sizes)b::bigint[], %(shas)b::text[],
                %(mtimes)b::timestamptz[], %(mtime_ns)b::bigint[], %(inodes)b::bigint[],
                %(raw_paths)b::bytea[], %(changes)b::text[], %(modes)b::integer[],
                %(versions)b::bigint[], %(offsets)b::bigint[])
         AS t(path, size, sha256, mtime, mtime_ns, inode, raw_path, change, mode, version,
              pack_offset)
"""

# The job's reserved position, when it holds (lineage.opening_seq); a record of a deleted
# file is seen at that position only.
_POSITIONS = """%(first_seq)s::bigint,
    CASE WHEN t.change = 'deleted' THEN %(first_seq)s::bigint + 1 END"""

# Canonical candidates: the first file of each content not yet in the bucket, with its
# stored content when the caller has already uploaded it.
_INSERT_CANONICAL = f"""
    INSERT INTO files (job_id, bucket_id, source_id, path, size, sha256, mtime, mtime_ns, inode,
                       raw_path, change, mode, is_duplicate, object_version_id, pack_offset,
                       first_seq, end_seq)
    SELECT %(job_id)s, %(bucket_id)s, %(source_id)s, t.path, t.size, t.sha256, t.mtime, t.mtime_ns, t.inode,
           t.raw_path, t.change, t.mode, false, t.version, t.pack_offset, {_POSITIONS}
    {_BATCH_ROWS}
    ON CONFLICT DO NOTHING
    RETURNING {{returning}}
"""

# The rest become duplicates of whichever canonical file now holds their content.
_INSERT_DUPLICATES = f"""
    INSERT INTO files (job_id, bucket_id, source_id, path, size, sha256, mtime, mtime_ns, inode,
                       raw_path, change, mode, is_duplicate, canonical_file_id, object_version_id,
                       first_seq, end_seq)
    SELECT %(job_id)s, %(bucket_id)s, %(source_id)s, t.path, t.size, t.sha256, t.mtime, t.mtime_ns, t.inode,
           t.raw_path, t.change, t.mode, true, c.id, c.object_version_id, {_POSITIONS}
    {_BATCH_ROWS}
    JOIN files c ON c.bucket_id = %(bucket_id)s AND c.sha256 = t.sha256 AND NOT c.is_duplicate
                AND c.size = t.size
    ON CONFLICT (job_id, path) DO NOTHING
    RETURNING {{returning}}
"""

# Where a content is stored: (version id, offset in a pack or None for the whole object).
Stored = tuple[int, int | None]


def _columns(files: Sequence[FileIn], stored: Mapping[str, Stored]) -> dict[str, Any]:
    where = [stored.get(f.sha256) for f in files]
    return {
        "paths": [f.path for f in files],
        "sizes": [f.size for f in files],
        "shas": [f.sha256 for f in files],
        "mtimes": [f.mtime for f in files],
        "mtime_ns": [f.mtime_ns for f in files],
        "inodes": [f.inode for f in files],
        "raw_paths": [f.raw_path for f in files],
        "changes": [f.change.value for f in files],
        "modes": [f.mode for f in files],
        "versions": [w[0] if w else None for w in where],
        "offsets": [w[1] if w else None for w in where],
    }


def register_files(
    session: Session,
    job_id: int,
    files: Sequence[FileIn],
    *,
    stored: Mapping[str, Stored] | None = None,
    whole_rows: bool = True,
) -> list[FileRecord]:
    """Register a batch in one transaction (all or nothing), in bulk (the caller commits).

    Re-registering the same path with the same content is idempotent; the same path
    with other content is a conflict. `stored` names contents the caller has uploaded
    (their versions recorded in this transaction): a file of such a content is written
    once, with where its content is, and a canonical file waiting for that content is
    linked to it. Without `whole_rows` an answer holds only the path, sha256 and
    object_version_id (cheaper, for callers that only check what is stored).
    """
    batch = _validated(files)
    job = get_job(session, job_id)
    if job.status.finished:
        raise Conflict(
            f"job {job_id} is {job.status.value}; it takes no more files", field="job_id"
        )
    lock_bucket_for_retention(session, job.bucket_id, shared=True)
    stored = stored or {}
    params = {
        "job_id": job_id,
        "bucket_id": job.bucket_id,
        "source_id": job.source_id,
        "first_seq": lineage.opening_seq(session, job_id),
    }
    # RETURNING whole rows answers the caller without reading them back; the rows are
    # answered as they are (attribute access like File's), since building ORM objects
    # would cost more than the inserts.
    returning = "files.*" if whole_rows else "files.path, files.sha256, files.object_version_id"
    inserted: dict[str, FileRecord] = {}

    def attempt(statement: str, files: list[FileIn]) -> None:
        if files:
            query = statement.format(returning=returning)
            for row in named_rows(session, query, {**params, **_columns(files, stored)}):
                inserted[row.path] = row

    # An unchanged file's content is already in the bucket: it goes straight to being a
    # duplicate, and becomes canonical only if that content has no canonical file now.
    unchanged = [f for f in batch if f.change is FileChange.UNCHANGED]
    attempt(_INSERT_CANONICAL, [f for f in batch if f.change is not FileChange.UNCHANGED])
    if stored:  # contents uploaded for canonical files already there without them
        waiting = {f.sha256 for f in batch if f.path not in inserted and f.sha256 in stored}
        links = [(sha, *stored[sha]) for sha in sorted(waiting)]
        # Not one stored meanwhile (by a job beside this one): its upload is then unused.
        link_contents(session, job.bucket_id, links, waiting_only=True)
    attempt(_INSERT_DUPLICATES, [f for f in batch if f.path not in inserted])
    attempt(_INSERT_CANONICAL, [f for f in unchanged if f.path not in inserted])
    attempt(_INSERT_DUPLICATES, [f for f in unchanged if f.path not in inserted])
    _check_leftovers(session, job_id, [f for f in batch if f.path not in inserted], inserted)
    session.flush()
    return [inserted[f.path] for f in batch]


def link_contents(
    session: Session,
    bucket_id: int,
    links: Sequence[tuple[str, int, int | None]],
    *,
    waiting_only: bool = False,
) -> None:
    """Point the canonical files of contents (and their duplicates) at the version now
    holding them: (sha256, version id, offset in a pack or None); with `waiting_only`,
    only those whose content is not stored. A bucket has one canonical file per content,
    found by the index that makes it so."""
    if not links:
        return
    session.execute(
        text("""
            WITH linked AS (
                UPDATE files SET object_version_id = v.version, pack_offset = v.pack_offset
                FROM unnest(CAST(:shas AS text[]), CAST(:versions AS bigint[]),
                            CAST(:offsets AS bigint[])) AS v(sha256, version, pack_offset)
                WHERE files.bucket_id = :bucket AND files.sha256 = v.sha256
                  AND NOT files.is_duplicate
                  AND (NOT :waiting_only OR files.object_version_id IS NULL)
                RETURNING files.id, v.version
            )
            -- a duplicate's offset is its canonical file's
            UPDATE files SET object_version_id = linked.version, pack_offset = NULL
            FROM linked WHERE files.canonical_file_id = linked.id AND files.is_duplicate
        """),
        {
            "bucket": bucket_id,
            "waiting_only": waiting_only,
            "shas": [sha for sha, _, _ in links],
            "versions": [version for _, version, _ in links],
            "offsets": [offset for _, _, offset in links],
        },
    )


def stored_contents(session: Session, bucket_id: int, shas: Sequence[str]) -> set[str]:
    """Those of `shas` whose content the bucket holds: uploading them again would only
    duplicate them."""
    if not shas:
        return set()
    rows = named_rows(
        session,
        """SELECT sha256 FROM files
           WHERE bucket_id = %(bucket)s AND sha256 = ANY(%(shas)b::text[])
             AND NOT is_duplicate AND object_version_id IS NOT NULL""",
        {"bucket": bucket_id, "shas": list(shas)},
    )
    return {row.sha256 for row in rows}


def stored_sizes(session: Session, bucket_id: int, sizes: Sequence[int]) -> set[int]:
    """Those of `sizes` (each at least SIZES_INDEXED_FROM) that some content the bucket
    holds has: a file of any other size is no duplicate of stored content."""
    if not sizes:
        return set()
    if min(sizes) < SIZES_INDEXED_FROM:
        raise ValueError(f"sizes below {SIZES_INDEXED_FROM} are not indexed")
    rows = named_rows(
        session,
        f"""SELECT DISTINCT size FROM files
            WHERE bucket_id = %(bucket)s AND size = ANY(%(sizes)b::bigint[])
              AND {LARGE_CONTENTS} AND object_version_id IS NOT NULL""",
        {"bucket": bucket_id, "sizes": list(sizes)},
    )
    return {row.size for row in rows}


def _check_leftovers(
    session: Session, job_id: int, leftovers: list[FileIn], inserted: dict[str, FileRecord]
) -> None:
    """Files neither inserted nor duplicated: already registered, or a size/checksum clash."""
    if not leftovers:
        return
    existing = {
        f.path: f
        for f in session.scalars(
            select(File).where(File.job_id == job_id, File.path.in_([f.path for f in leftovers]))
        )
    }
    for item in leftovers:
        found = existing.get(item.path)
        if found is not None and (found.sha256, found.size) == (item.sha256, item.size):
            inserted[item.path] = found  # a retried registration: answer what is there
            continue
        session.rollback()
        if found is not None:
            raise Conflict(
                f"path {item.path!r} is already registered in job {job_id} with other content",
                field="path",
            )
        raise Invalid(
            f"sha256 of {item.path!r} matches a stored file of another size in this "
            "bucket: the checksum or the size is wrong",
            field="size",
        )


def get_file(session: Session, file_id: int) -> File:
    return get_row(session, File, file_id, what="file", field="file_id")


def list_files(
    session: Session,
    *,
    job_id: int | None = None,
    bucket_id: int | None = None,
    path_prefix: str | None = None,
    sha256: str | None = None,
    duplicates: bool | None = None,
    after: int | None,
    limit: int,
) -> Page[File]:
    conditions = []
    if bucket_id is not None:
        conditions.append(File.bucket_id == bucket_id)
    if path_prefix:
        conditions.append(File.path.startswith(path_prefix.lstrip("/"), autoescape=True))
    if sha256 is not None:
        if not SHA256.match(sha256.lower()):
            raise Invalid("must be 64 hexadecimal characters", field="sha256")
        conditions.append(File.sha256 == sha256.lower())
    if duplicates is not None:
        conditions.append(File.is_duplicate.is_(duplicates))
    if job_id is None:
        return scalar_page(
            session, select(File).where(*conditions), File.id, after=after, limit=limit
        )
    job = get_job(session, job_id)
    # Its tree, and its records of the files deleted since its parent.
    in_job = select(File, lineage.change_in(job)).where(
        lineage.in_tree(session, job, with_deleted=True), *conditions
    )
    states = []
    for state, change in session.execute(keyset(in_job, File.id, after, limit)):
        # Shown as the job sees it; detached first, so that nothing writes it back.
        session.expunge(state)
        state.change = FileChange(change)
        states.append(state)
    return page_of(states, limit, lambda state: int(state.id))


# Duplicates that saved an upload: a file whose content was already stored when it was
# new or changed. A state re-recorded with its content unchanged (other metadata) or a
# record of a deletion saved nothing.
SAVING = (FileChange.NEW, FileChange.CHANGED)


@dataclass(frozen=True)
class DuplicateGroup:
    canonical_file_id: int
    bucket_id: int
    sha256: str
    size: int
    object_version_id: int | None
    duplicates: int
    bytes_saved: int


def duplicate_groups(
    session: Session, *, bucket_id: int | None = None, after: int | None, limit: int
) -> Page[DuplicateGroup]:
    canonical = aliased(File)
    duplicate = aliased(File)
    query = (
        select(
            canonical.id,
            canonical.bucket_id,
            canonical.sha256,
            canonical.size,
            canonical.object_version_id,
            func.count(duplicate.id),
        )
        .join(duplicate, duplicate.canonical_file_id == canonical.id)
        .where(duplicate.is_duplicate, duplicate.change.in_(SAVING))
        .group_by(canonical.id)
    )
    if bucket_id is not None:
        query = query.where(canonical.bucket_id == bucket_id)
    rows = session.execute(keyset(query, canonical.id, after, limit)).all()
    groups = [DuplicateGroup(r[0], r[1], r[2], r[3], r[4], r[5], r[5] * r[3]) for r in rows]
    return page_of(groups, limit, lambda group: group.canonical_file_id)


def duplicate_summary(session: Session, *, bucket_id: int | None = None) -> dict[str, int]:
    query = select(
        func.count(func.distinct(File.canonical_file_id)),
        func.count(),
        func.coalesce(func.sum(File.size), 0),
    ).where(File.is_duplicate, File.change.in_(SAVING))
    if bucket_id is not None:
        query = query.where(File.bucket_id == bucket_id)
    groups, files, saved = session.execute(query).one()
    return {"groups": groups, "duplicate_files": files, "bytes_saved": int(saved)}


def versions_of_duplicates() -> Select[int | None]:
    """The versions that are the stored content of duplicate files: deleting one would
    lose every duplicate of it. Joined from the duplicates' side, so that the planner can
    scan the duplicates once instead of probing for every version it is asked about."""
    duplicate = aliased(File)
    return (
        select(File.object_version_id)
        .join(duplicate, duplicate.canonical_file_id == File.id)
        .where(duplicate.is_duplicate, ~File.is_duplicate)
        .distinct()
    )


def versions_holding_duplicates(session: Session, version_ids: Sequence[int]) -> set[int]:
    """Those of `version_ids` that are the stored content of duplicate files."""
    if not version_ids:
        return set()
    query = versions_of_duplicates().where(in_ids(File.object_version_id, version_ids))
    return {v for v in session.scalars(query) if v is not None}


def job_file_stats(session: Session, job_id: int) -> JobStats:
    """What a job's registered files amount to: its statistics on completion."""
    row = session.execute(
        select(
            func.count(),
            func.count().filter(File.is_duplicate),
            func.count().filter(~File.is_duplicate & File.object_version_id.is_(None)),
            func.coalesce(func.sum(File.size), 0),
            func.coalesce(func.sum(File.size).filter(File.is_duplicate), 0),
        ).where(File.job_id == job_id)
    ).one()
    return JobStats(
        files_seen=row[0],
        duplicate=row[1],
        pending_upload=row[2],
        bytes=int(row[3]),
        bytes_saved=int(row[4]),
    )

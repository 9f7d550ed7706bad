"""A source's lineage: its completed jobs, numbered, and the file states each one sees.

A file state (a `files` row) is opened by the job that first sees a path with that
content and metadata, and closed by the job of the same source that sees it change or
vanish. A completed job takes the next position of its source (`lineage_seq`); its
tree is the states open there. While a job runs (or if it never completes) its tree is
its own rows over its parent's tree. So an unchanged file costs no row, and a backup
adds rows for what is new, changed or deleted only.

Positions are given at completion, under a lock of the source row: a job that ran
beside another of its source (both starting from the same parent) is rebased onto
whichever completed first, so that each position's tree is exactly its job's. A job
reserves the position after its parent's at its start and writes its rows with it;
taking it then costs no rewrite of them (a job that lost its reservation to one that
completed first has its rows given their position at its end instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.orm import Session, aliased

from ..errors import Invalid, NotFound
from .arrays import in_ids
from .models import BackupJob, File, FileChange, Source, SourceType
from .pages import Page, page_of


def source_id_for(
    session: Session,
    *,
    bucket_id: int,
    source_system: str,
    key_prefix: str,
    source_type: SourceType,
) -> int:
    """The source these jobs are of, recorded on first use (the caller commits)."""
    identity = (
        (Source.bucket_id == bucket_id)
        & (Source.source_system == source_system)
        & (Source.key_prefix == key_prefix)
        & (Source.source_type == source_type)
    )
    found = session.scalar(select(Source.id).where(identity))
    if found is not None:
        return found
    session.execute(
        insert(Source)
        .values(
            bucket_id=bucket_id,
            source_system=source_system,
            key_prefix=key_prefix,
            source_type=source_type,
        )
        .on_conflict_do_nothing()
    )
    return session.scalar(select(Source.id).where(identity))  # type: ignore[return-value]


def start(session: Session, job: BackupJob) -> None:
    """At a job's first start: its parent is its source's newest position, and the one
    after is reserved for it (the caller commits)."""
    head_seq, parent_id = session.execute(
        select(Source.head_seq, BackupJob.id)
        .outerjoin(
            BackupJob,
            (BackupJob.source_id == Source.id) & (BackupJob.lineage_seq == Source.head_seq),
        )
        .where(Source.id == job.source_id)
    ).one()
    job.parent_job_id = parent_id
    job.reserved_seq = head_seq + 1


# While no other job of its source has completed since its reservation, a job's rows are
# written at its reserved position, invisible to every tree until it takes that position
# (no rewrite then). The source row stays key-share locked until the caller commits: a
# job completing meanwhile (which locks it for update) waits, and one that completed
# first made the reservation stale (the head moved), so the rows get no position.
_OPENING_SEQ = text("""
    SELECT j.reserved_seq FROM backup_jobs j JOIN sources s ON s.id = j.source_id
    WHERE j.id = :job AND s.head_seq + 1 = j.reserved_seq
    FOR KEY SHARE OF s
""")


def opening_seq(session: Session, job_id: int) -> int | None:
    """The position a job's new rows are written with now, or None (given at its end)."""
    seq: int | None = session.scalar(_OPENING_SEQ, {"job": job_id})
    return seq


def open_at(seq: int, row: type[File] = File) -> ColumnElement[bool]:
    return and_(row.first_seq <= seq, or_(row.end_seq.is_(None), row.end_seq > seq))


def tree_at(source_id: int, seq: int, row: type[File] = File) -> ColumnElement[bool]:
    """The files (not the records of deletions) at a position of a source."""
    return and_(row.source_id == source_id, open_at(seq, row), row.change != FileChange.DELETED)


def parent_seq(session: Session, job: BackupJob) -> int | None:
    if job.parent_job_id is None:
        return None
    return session.scalar(select(BackupJob.lineage_seq).where(BackupJob.id == job.parent_job_id))


def in_tree(
    session: Session, job: BackupJob, row: type[File] = File, *, with_deleted: bool = False
) -> ColumnElement[bool]:
    """Which rows are in the job's tree (with `with_deleted`, its own records of files
    gone since its parent too)."""
    live = row.change != FileChange.DELETED
    if job.lineage_seq is not None:
        if with_deleted:
            return and_(row.source_id == job.source_id, open_at(job.lineage_seq, row))
        return tree_at(job.source_id, job.lineage_seq, row)
    own = row.job_id == job.id if with_deleted else and_(row.job_id == job.id, live)
    seq = parent_seq(session, job)
    if seq is None:
        return own
    overridden = aliased(File)
    inherited = and_(
        tree_at(job.source_id, seq, row),
        ~exists().where(overridden.job_id == job.id, overridden.path == row.path),
    )
    return or_(own, inherited)


def change_in(job: BackupJob, row: type[File] = File) -> ColumnElement[str]:
    """What a row of the job's tree is relative to the job's parent: a row the job
    recorded says so itself; one it inherited is unchanged."""
    return case((row.job_id == job.id, row.change), else_=FileChange.UNCHANGED.value)


# The open states a job's own rows replace (a path it changed, deleted, or re-recorded):
# each of its rows probes the index of its source's states by path, however fresh the
# statistics are.
CLOSE_REPLACED = text("""
    UPDATE files o SET end_seq = :seq
    FROM files m
    WHERE m.job_id = :job AND o.source_id = :source AND o.path = m.path
      AND o.end_seq IS NULL AND o.first_seq < :seq
""")
# Rows at or past the position being taken are reservations (every position given is
# below it): other jobs' lose theirs, to get a position at their own end; so do the
# job's own when it cannot keep it.
DROP_RESERVATIONS = text("""
    UPDATE files SET first_seq = NULL, end_seq = NULL
    WHERE source_id = :source AND first_seq >= :seq AND (job_id <> :job OR NOT :kept)
""")


def join(session: Session, job: BackupJob) -> int:
    """Give a job that completed the next position of its source (the caller commits):
    close the states its rows replace, rebase it if another job of the source completed
    since its parent, open its rows. Answers the position."""
    session.flush()
    session.refresh(job)  # its parent may have been set by its worker's own session
    source = session.scalars(
        select(Source).where(Source.id == job.source_id).with_for_update()
    ).one()
    if job.lineage_seq is not None:
        return job.lineage_seq
    seq = source.head_seq + 1
    base = parent_seq(session, job) or 0
    # Its reservation held (nobody completed since): its rows are already at `seq`.
    kept = job.reserved_seq == seq and base == source.head_seq
    params = {"source": job.source_id, "job": job.id, "seq": seq, "base": base, "kept": kept}
    session.execute(DROP_RESERVATIONS, params)
    session.execute(CLOSE_REPLACED, params)
    if source.head_seq != base:
        # Positions after its parent's are not in its tree: what they opened is closed…
        session.execute(
            text("""
                UPDATE files SET end_seq = :seq
                WHERE source_id = :source AND end_seq IS NULL AND first_seq > :base
            """),
            params,
        )
        # …and what they closed that it still has is opened again, as a row of its own.
        session.execute(
            text("""
                INSERT INTO files (job_id, bucket_id, source_id, first_seq, path, size, sha256,
                                   mtime, mtime_ns, inode, mode, raw_path, change,
                                   is_duplicate, canonical_file_id, object_version_id)
                SELECT :job, p.bucket_id, p.source_id, NULL, p.path, p.size, p.sha256,
                       p.mtime, p.mtime_ns, p.inode, p.mode, p.raw_path, 'unchanged',
                       true, coalesce(p.canonical_file_id, p.id), p.object_version_id
                FROM files p
                WHERE p.source_id = :source AND :base > 0
                  AND p.first_seq <= :base AND p.end_seq > :base AND p.end_seq < :seq
                  AND p.change <> 'deleted'
                  AND NOT EXISTS (SELECT 1 FROM files m WHERE m.job_id = :job AND m.path = p.path)
            """),
            params,
        )
    if not kept:
        # Its rows open here; its records of deleted files are seen at this position only.
        session.execute(
            update(File)
            .where(File.job_id == job.id)
            .values(
                first_seq=seq,
                end_seq=case((File.change == FileChange.DELETED, seq + 1), else_=None),
            )
        )
    source.head_seq = seq
    job.lineage_seq = seq
    session.flush()
    return seq


def _differs(job: BackupJob, other: BackupJob, row: type[File]) -> ColumnElement[bool] | None:
    """States in `job`'s tree and not in `other`'s, when both are positions of one
    lineage: read from the ranges that opened or closed between them (indexed)."""
    if job.source_id != other.source_id or job.lineage_seq is None or other.lineage_seq is None:
        return None
    mine, theirs = job.lineage_seq, other.lineage_seq
    if mine == theirs:
        return false()
    if mine > theirs:
        between = and_(
            row.first_seq > theirs,
            row.first_seq <= mine,
            or_(row.end_seq.is_(None), row.end_seq > mine),
        )
    else:
        between = and_(row.first_seq <= mine, row.end_seq > mine, row.end_seq <= theirs)
    return and_(row.source_id == job.source_id, between, row.change != FileChange.DELETED)


def only_in(
    session: Session, job: BackupJob, other: BackupJob, row: type[File] = File
) -> ColumnElement[bool]:
    """The states of `job`'s tree that `other`'s does not have."""
    fast = _differs(job, other, row)
    if fast is not None:
        return fast
    return and_(in_tree(session, job, row), ~in_tree(session, other, row))


@dataclass(frozen=True)
class Difference:
    """A path whose state differs between two jobs: added (only in the job), deleted
    (only in the one it is compared against) or changed (in both, not the same)."""

    id: int  # the cursor: the job's state, or for a deletion the other's
    path: str
    change: str
    before: File | None
    after: File | None


def _materialized(query: Select, name: str) -> CTE:  # type: ignore[type-arg]
    """Computed whole before the page is cut: a LIMIT would otherwise tempt the planner
    into nested loops over sets that are only small when read as wholes."""
    return query.cte(name).prefix_with("MATERIALIZED")


def diff(
    session: Session, job: BackupJob, against: BackupJob, *, after: int | None, limit: int
) -> Page[Difference]:
    # Each side's states (id and path), read by their ranges: proportional to what changed
    # between the two jobs, whatever the size of their trees; paired by path as wholes;
    # then only the page's rows are read, by primary key.
    mine = _materialized(select(File.id, File.path).where(only_in(session, job, against)), "mine")
    theirs = _materialized(
        select(File.id, File.path).where(only_in(session, against, job)), "theirs"
    )
    cursor = -1 if after is None else after
    ahead = session.execute(
        select(mine.c.id, theirs.c.id)
        .outerjoin(theirs, theirs.c.path == mine.c.path)
        .where(mine.c.id > cursor)
        .order_by(mine.c.id)
        .limit(limit + 1)
    ).all()
    gone = session.scalars(
        select(theirs.c.id)
        .where(~exists().where(mine.c.path == theirs.c.path), theirs.c.id > cursor)
        .order_by(theirs.c.id)
        .limit(limit + 1)
    ).all()
    wanted = {i for pair in ahead for i in pair if i is not None} | set(gone)
    rows = {
        state.id: state
        for state in session.scalars(select(File).where(in_ids(File.id, sorted(wanted))))
    }
    found = [
        Difference(
            now_id,
            rows[now_id].path,
            "added" if then_id is None else "changed",
            None if then_id is None else rows[then_id],
            rows[now_id],
        )
        for now_id, then_id in ahead
    ] + [Difference(i, rows[i].path, "deleted", rows[i], None) for i in gone]
    found.sort(key=lambda difference: difference.id)
    return page_of(found[: limit + 1], limit, lambda difference: difference.id)


def job_as_of(
    session: Session,
    *,
    bucket_id: int,
    source_system: str,
    key_prefix: str | None,
    moment: datetime,
) -> BackupJob:
    """The newest completed job of a source at `moment`: its tree is the source then."""
    sources = select(Source.id).where(
        Source.bucket_id == bucket_id, Source.source_system == source_system
    )
    if key_prefix is not None:
        sources = sources.where(Source.key_prefix == key_prefix.strip("/"))
    matching = session.scalars(sources).all()
    if len(matching) > 1:
        raise Invalid(
            f"{len(matching)} sources of bucket {bucket_id} back up {source_system!r} "
            "(other key prefixes or kinds): give key_prefix",
            field="key_prefix",
        )
    job = None
    if matching:
        job = session.scalar(
            select(BackupJob)
            .where(
                BackupJob.source_id == matching[0],
                BackupJob.lineage_seq.is_not(None),
                BackupJob.completed_at <= moment,
            )
            .order_by(BackupJob.lineage_seq.desc())
            .limit(1)
        )
    if job is None:
        raise NotFound(
            f"no completed backup of {source_system!r} in bucket {bucket_id} at or before "
            f"{moment.isoformat()}",
            field="as_of",
        )
    return job


def deletions_since(
    job_id: int, source_id: int, parent_seq: int, first_seq: int | None = None
) -> Insert:
    """Records, for the job, of its parent's files that are not in the temporary table
    `seen` (the parent's states the job's run saw)."""
    parent = aliased(File, name="p")
    gone = select(
        literal(job_id),
        parent.bucket_id,
        parent.source_id,
        parent.path,
        parent.size,
        parent.sha256,
        parent.mtime,
        parent.mtime_ns,
        parent.inode,
        parent.raw_path,
        literal(FileChange.DELETED.value),
        parent.mode,
        true(),
        func.coalesce(parent.canonical_file_id, parent.id),
        parent.object_version_id,
        literal(first_seq, BigInteger),
        literal(None if first_seq is None else first_seq + 1, BigInteger),
    ).where(
        tree_at(source_id, parent_seq, parent),
        text("NOT EXISTS (SELECT 1 FROM seen WHERE seen.id = p.id)"),
        ~exists().where(File.job_id == job_id, File.path == parent.path),
    )
    columns = [
        "job_id", "bucket_id", "source_id", "path", "size", "sha256", "mtime", "mtime_ns",
        "inode", "raw_path", "change", "mode", "is_duplicate", "canonical_file_id",
        "object_version_id", "first_seq", "end_seq",
    ]  # fmt: skip
    return insert(File).from_select(columns, gone).on_conflict_do_nothing()


def record_deletions(
    session: Session, job_id: int, source_id: int, parent_seq: int, seen: Sequence[int]
) -> None:
    """Record as deleted in the job its parent's files it did not see (the caller
    commits). The states seen go to a temporary table, analysed and with a primary key,
    so that the anti-join's plan is linear whatever the statistics of `files` say."""
    session.execute(text("CREATE TEMP TABLE seen (id bigint PRIMARY KEY) ON COMMIT DROP"))
    connection = session.connection().connection.driver_connection
    with connection.cursor().copy("COPY seen (id) FROM STDIN") as copy:  # type: ignore[union-attr]
        for state_id in seen:
            copy.write_row((state_id,))
    session.execute(text("ANALYZE seen"))
    first_seq = opening_seq(session, job_id)
    session.execute(deletions_since(job_id, source_id, parent_seq, first_seq))


# What the jobs that stay see, for retention: two CTEs to put after WITH. Jobs of every
# status stay unless forgotten (or in `:doomed`, those being forgotten now): a completed
# one sees its position; one not in the lineage (running, failed, ...) its own rows and,
# for its unchanged files, its parent's whole tree (kept whole: never less than it uses).
KEPT = """
    kept_positions AS (
        SELECT source_id, lineage_seq AS seq FROM backup_jobs
        WHERE lineage_seq IS NOT NULL AND forgotten_at IS NULL AND id <> ALL(:doomed)
        UNION
        SELECT p.source_id, p.lineage_seq FROM backup_jobs j
        JOIN backup_jobs p ON p.id = j.parent_job_id
        WHERE j.lineage_seq IS NULL AND j.forgotten_at IS NULL AND p.lineage_seq IS NOT NULL
    ), kept_own AS (
        SELECT id FROM backup_jobs
        WHERE lineage_seq IS NULL AND forgotten_at IS NULL AND id <> ALL(:doomed)
    )"""


def kept_sees(row: str) -> str:
    """SQL: whether a job that stays sees the files row `row` (with KEPT's CTEs)."""
    return f"""(EXISTS (SELECT 1 FROM kept_positions p
                 WHERE p.source_id = {row}.source_id AND {row}.first_seq <= p.seq
                   AND ({row}.end_seq IS NULL OR {row}.end_seq > p.seq))
         OR {row}.job_id IN (SELECT id FROM kept_own))"""

"""Find a file by a fragment of its path across every backup of a source (or of each
source of a bucket): the paths that match, each with the contents it had, and which of
the source's completed jobs saw each."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Invalid
from .models import BackupJob, File, FileChange, Source

MIN_FRAGMENT = 2  # one letter would match most of a tree


@dataclass(frozen=True)
class Seen:
    """One content a path had, and the completed jobs that saw it, oldest first."""

    state: File
    job_ids: list[int]


@dataclass
class Found:
    source: Source
    path: str
    contents: list[Seen] = field(default_factory=list)


def _escaped(fragment: str) -> str:
    return fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find(
    session: Session,
    fragment: str,
    *,
    source_id: int | None = None,
    bucket_id: int | None = None,
    limit: int,
) -> tuple[list[Found], bool]:
    """The first `limit` paths (by source, then path) holding `fragment`, whatever its
    case, and whether more matched."""
    fragment = fragment.strip()
    if len(fragment) < MIN_FRAGMENT:
        raise Invalid(f"give at least {MIN_FRAGMENT} characters to look for", field="q")
    sources = select(Source)
    if source_id is not None:
        sources = sources.where(Source.id == source_id)
    if bucket_id is not None:
        sources = sources.where(Source.bucket_id == bucket_id)
    in_scope = {source.id: source for source in session.scalars(sources)}
    matches = session.execute(
        select(File.source_id, File.path)
        .where(
            File.source_id.in_(in_scope),
            File.path.ilike(f"%{_escaped(fragment)}%", escape="\\"),
            File.change != FileChange.DELETED,
            File.first_seq.is_not(None),
        )
        .distinct()
        .order_by(File.source_id, File.path)
        .limit(limit + 1)
    ).all()
    more = len(matches) > limit
    wanted = matches[:limit]
    found = {(source, path): Found(in_scope[source], path) for source, path in wanted}
    if not found:
        return [], more
    seqs: dict[int, dict[int, int]] = defaultdict(dict)  # source -> lineage position -> job
    for source, seq, job_id in session.execute(
        select(BackupJob.source_id, BackupJob.lineage_seq, BackupJob.id).where(
            BackupJob.source_id.in_({source for source, _ in wanted}),
            BackupJob.lineage_seq.is_not(None),
            BackupJob.forgotten_at.is_(None),
        )
    ):
        if seq is not None:
            seqs[source][seq] = job_id
    states = session.scalars(
        select(File)
        .where(
            File.source_id.in_({source for source, _ in wanted}),
            File.path.in_({path for _, path in wanted}),
            File.change != FileChange.DELETED,
            File.first_seq.is_not(None),
        )
        .order_by(File.source_id, File.path, File.first_seq)
    )
    for state in states:
        entry = found.get((state.source_id, state.path))
        if entry is None or state.first_seq is None:
            continue
        positions = seqs[state.source_id]
        end = state.end_seq if state.end_seq is not None else max(positions, default=0) + 1
        seen = [positions[seq] for seq in range(state.first_seq, end) if seq in positions]
        if seen:
            entry.contents.append(Seen(state, seen))
    return [entry for entry in found.values() if entry.contents], more

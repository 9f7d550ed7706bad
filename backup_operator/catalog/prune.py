"""Prune packs, the catalog's part: which packs hold what, whether a kept file still
references each content, and the rows a rewritten pack changes (services.prune does
the rewriting against the store)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.orm import Session

from ..packformat import sealed
from . import lineage
from .arrays import in_ids
from .files import link_contents
from .models import File, ObjectVersion
from .objects import Upload, record_versions

# A pack rewritten once this share of its content bytes is referenced by no kept file.
DEFAULT_WASTE = 0.5

# The contents of each live pack version of a bucket, and whether a file a remaining job
# sees holds each (the canonical file, or one of its duplicates).
_PACK_CONTENTS = text(f"""
    WITH {lineage.KEPT}
    SELECT v.id AS version_row, o.key, v.version_id, v.size AS pack_size, v.lock_mode,
           v.retain_until, v.legal_hold, v.job_id,
           k.id AS file_id, k.pack_offset, k.size, k.sha256,
           ({lineage.kept_sees("k")} OR EXISTS (
               SELECT 1 FROM files s
               WHERE s.canonical_file_id = k.id AND s.is_duplicate AND s.change <> 'deleted'
                 AND {lineage.kept_sees("s")})) AS kept
    FROM object_versions v
    JOIN backup_objects o ON o.id = v.object_id AND o.is_pack AND o.bucket_id = :bucket
    JOIN files k ON k.object_version_id = v.id AND NOT k.is_duplicate
                AND k.pack_offset IS NOT NULL
    WHERE v.deleted_at IS NULL
    ORDER BY v.id, k.pack_offset
""")


@dataclass
class PackUse:
    version_row: int
    key: str
    version_id: str
    size: int
    locked: bool
    job_id: int | None
    entries: list[tuple[int, int, int, str, bool]]  # file, offset, size, sha256, kept

    @property
    def kept_bytes(self) -> int:
        return sum(size for _, _, size, _, kept in self.entries if kept)

    @property
    def content_bytes(self) -> int:
        return sum(size for _, _, size, _, _ in self.entries)


def pack_uses(session: Session, bucket_id: int) -> list[PackUse]:
    uses: dict[int, PackUse] = {}
    for row in session.execute(_PACK_CONTENTS, {"bucket": bucket_id, "doomed": []}):
        use = uses.get(row.version_row)
        if use is None:
            use = uses[row.version_row] = PackUse(
                row.version_row,
                row.key,
                row.version_id,
                row.pack_size,
                bool(row.lock_mode or row.legal_hold),
                row.job_id,
                [],
            )
        use.entries.append((row.file_id, row.pack_offset, row.size, row.sha256, row.kept))
    return list(uses.values())


@dataclass
class PruneResult:
    rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "packs_rewritten": self.rewritten,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
        }


def without_unreferenced(use: PackUse, old: bytes) -> tuple[bytes, tuple[tuple[str, int], ...]]:
    """The pack `use` rewritten with only its kept contents (each checked against its
    recorded sha256), and where each of those now starts."""
    body = bytearray()
    moved: list[tuple[str, int]] = []
    index = []
    for _, offset, size, sha, still in use.entries:
        if not still:
            continue
        piece = old[offset : offset + size]
        if hashlib.sha256(piece).hexdigest() != sha:
            raise ValueError(f"pack {use.key}: a content is not what was recorded")
        moved.append((sha, len(body)))
        index.append((sha, len(body), size))
        body += piece
    return sealed(body, index), tuple(moved)


def repoint(
    session: Session,
    bucket_id: int,
    use: PackUse,
    upload: Upload,
    *,
    run_id: int | None,
) -> None:
    """The kept contents of the old pack now live in `upload`; the others are no longer
    stored anywhere, and the old version is marked deleted (flushed)."""
    link_contents(session, bucket_id, record_versions(session, bucket_id, [upload], job_id=None))
    gone = [file_id for file_id, _, _, _, still in use.entries if not still]
    session.execute(
        update(File)
        .where(in_ids(File.id, gone) | in_ids(File.canonical_file_id, gone))
        .values(object_version_id=None, pack_offset=None)
    )
    session.execute(
        update(ObjectVersion)
        .where(ObjectVersion.id == use.version_row)
        .values(
            deleted_at=func.now(),
            deleted_by_run_id=run_id,
            deletion_reason=f"pack rewritten without its unreferenced contents ({upload.key})",
        )
    )
    session.flush()

"""Prune packs: a pack whose contents no kept file references any more is deleted with
the other orphaned versions; one mostly unreferenced (its waste past PACK_PRUNE_WASTE)
is rewritten with only what is still referenced, as restic's prune does.

Order, so that no referenced byte is ever lost: the new pack is uploaded first (a crash
there leaves an untracked object, which `verify` finds); then, in one transaction, the
files are pointed at it and the old version is marked deleted; then the old version is
deleted from the store (a crash there leaves it in the bucket, untracked, for `verify
--repair` or the next prune). Packs under object lock or legal hold are left alone.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.orm import Session

from ..packformat import pack_key, sealed
from ..storage import ObjectStore
from . import lineage
from .arrays import in_ids
from .files import link_contents
from .locks import lock_bucket_for_retention
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


def prune_packs(
    session: Session,
    store: ObjectStore,
    bucket_id: int,
    bucket: str,
    *,
    waste: float,
    run_id: int | None = None,
) -> PruneResult:
    """Rewrite the bucket's packs whose unreferenced share is at least `waste` (and that
    some kept file still references). Under the bucket's retention lock."""
    result = PruneResult()
    lock_bucket_for_retention(session, bucket_id)
    for use in pack_uses(session, bucket_id):
        kept = use.kept_bytes
        if use.locked or kept == 0 or kept == use.content_bytes:
            continue
        if 1 - kept / use.content_bytes < waste:
            continue
        old = store.read_range(bucket, use.key, use.version_id, 0, use.size)
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
        data = sealed(body, index)
        new_key = pack_key()
        version_id, etag = store.put(bucket, new_key, io.BytesIO(data), len(data))
        upload = Upload(
            new_key,
            version_id,
            len(data),
            hashlib.sha256(data).hexdigest(),
            etag,
            None,
            tuple(moved),
        )
        link_contents(
            session, bucket_id, record_versions(session, bucket_id, [upload], job_id=None)
        )
        # The contents nobody keeps are no longer stored anywhere.
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
                deletion_reason=f"pack rewritten without its unreferenced contents ({new_key})",
            )
        )
        session.commit()
        store.delete_version(bucket, use.key, use.version_id)
        lock_bucket_for_retention(session, bucket_id)  # the next pack, under the lock again
        result.rewritten += 1
        result.bytes_before += use.size
        result.bytes_after += len(data)
    session.commit()
    return result

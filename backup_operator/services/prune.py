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

from sqlalchemy.orm import Session

from ..catalog.locks import lock_bucket_for_retention
from ..catalog.objects import Upload
from ..catalog.prune import PruneResult, pack_uses, repoint, without_unreferenced
from ..packformat import pack_key
from ..storage import ObjectStore


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
        data, moved = without_unreferenced(use, old)
        new_key = pack_key()
        version_id, etag = store.put(bucket, new_key, io.BytesIO(data), len(data))
        sha256 = hashlib.sha256(data).hexdigest()
        upload = Upload(new_key, version_id, len(data), sha256, etag, None, moved)
        repoint(session, bucket_id, use, upload, run_id=run_id)
        session.commit()
        store.delete_version(bucket, use.key, use.version_id)
        lock_bucket_for_retention(session, bucket_id)  # the next pack, under the lock again
        result.rewritten += 1
        result.bytes_before += use.size
        result.bytes_after += len(data)
    session.commit()
    return result

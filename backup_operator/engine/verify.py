"""Compare the catalog with the bucket, report drift, and repair what is safe.

- missing: live versions in the catalog that the store no longer has (deleted behind
  our back). Repair marks them deleted in the catalog, with the reason, and unlinks the
  files whose content they held: the next backup of those files stores them again.
- untracked: versions in the store the catalog does not know (an upload whose catalog
  write never happened, e.g. a worker killed between the two). Repair deletes them only
  when asked (`delete_untracked`), since the bucket may hold data that is not ours.
- size or checksum mismatch: the stored bytes are not what the catalog recorded; on a
  sample of versions or all of them; for a pack, each file's content in it as well.
  Never repaired automatically: reported.
- tag drift: an object's latest version has other tags in the store than the catalog
  recorded for it (checked with the checksums). Repair puts the catalog's tags back.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..catalog.arrays import in_ids
from ..catalog.buckets import get_bucket
from ..catalog.models import BackupObject, Bucket, File, ObjectVersion, Tag
from ..catalog.objects import mark_missing
from ..storage import ObjectStore

REPORT_ITEMS = 50


@dataclass
class Drift:
    bucket: str
    catalog_versions: int = 0
    store_versions: int = 0
    checked_checksums: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)
    untracked: list[tuple[str, str]] = field(default_factory=list)
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)
    tag_drift: list[tuple[str, str, str]] = field(default_factory=list)
    repaired_missing: int = 0
    repaired_tags: int = 0
    deleted_untracked: int = 0

    @property
    def clean(self) -> bool:
        unrepaired_missing = len(self.missing) - self.repaired_missing
        unrepaired_untracked = len(self.untracked) - self.deleted_untracked
        unrepaired_tags = len(self.tag_drift) - self.repaired_tags
        return not (
            unrepaired_missing or unrepaired_untracked or self.mismatched or unrepaired_tags
        )

    def summary(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "clean": self.clean,
            "catalog_versions": self.catalog_versions,
            "store_versions": self.store_versions,
            "checked_checksums": self.checked_checksums,
            "missing": len(self.missing),
            "untracked": len(self.untracked),
            "mismatched": len(self.mismatched),
            "tag_drift": len(self.tag_drift),
            "repaired_missing": self.repaired_missing,
            "repaired_tags": self.repaired_tags,
            "deleted_untracked": self.deleted_untracked,
            "examples": {
                "missing": [f"{k}@{v}" for k, v in self.missing[:REPORT_ITEMS]],
                "untracked": [f"{k}@{v}" for k, v in self.untracked[:REPORT_ITEMS]],
                "mismatched": [f"{k}@{v}: {why}" for k, v, why in self.mismatched[:REPORT_ITEMS]],
                "tag_drift": [f"{k}@{v}: {why}" for k, v, why in self.tag_drift[:REPORT_ITEMS]],
            },
        }


def _sha256(store: ObjectStore, bucket: str, key: str, version_id: str) -> str:
    digest = hashlib.sha256()
    for chunk in store.content(bucket, key, version_id):
        digest.update(chunk)
    return digest.hexdigest()


def verify(
    session: Session,
    store: ObjectStore,
    bucket_id: int,
    *,
    checksum_sample: int = 0,
    checksum_all: bool = False,
    repair: bool = False,
    delete_untracked: bool = False,
) -> Drift:
    bucket: Bucket = get_bucket(session, bucket_id)
    drift = Drift(bucket.name)
    stored = {(v.key, v.version_id): v.size for v in store.list_versions(bucket.name)}
    drift.store_versions = len(stored)
    catalog = {
        (key, version_id): (row_id, size, sha256)
        for row_id, key, version_id, size, sha256 in session.execute(
            select(
                ObjectVersion.id,
                BackupObject.key,
                ObjectVersion.version_id,
                ObjectVersion.size,
                ObjectVersion.sha256,
            )
            .join(BackupObject, BackupObject.id == ObjectVersion.object_id)
            .where(BackupObject.bucket_id == bucket_id, ObjectVersion.deleted_at.is_(None))
        )
    }
    drift.catalog_versions = len(catalog)
    drift.missing = sorted(set(catalog) - set(stored))
    drift.untracked = sorted(set(stored) - set(catalog))
    present = sorted(set(catalog) & set(stored))
    for key_version in present:
        if stored[key_version] != catalog[key_version][1]:
            drift.mismatched.append((*key_version, "size differs"))
    to_check = (
        present if checksum_all else random.sample(present, min(checksum_sample, len(present)))
    )
    packed = _packed_contents(session, [catalog[k][0] for k in to_check])
    for key, version_id in to_check:
        row_id = catalog[(key, version_id)][0]
        if row_id in packed:
            data = store.read_range(bucket.name, key, version_id, 0, catalog[(key, version_id)][1])
            sha = hashlib.sha256(data).hexdigest()
            for path, offset, size, content_sha in packed[row_id]:
                drift.checked_checksums += 1
                found = hashlib.sha256(data[offset : offset + size]).hexdigest()
                if found != content_sha:
                    drift.mismatched.append((key, version_id, f"{path}: sha256 is {found}"))
        else:
            sha = _sha256(store, bucket.name, key, version_id)
        drift.checked_checksums += 1
        if sha != catalog[(key, version_id)][2]:
            drift.mismatched.append((key, version_id, f"sha256 is {sha}"))
    _check_tags(session, store, bucket, catalog, to_check, drift, repair=repair)
    if repair and drift.missing:
        mark_missing(session, [catalog[m][0] for m in drift.missing])
        session.commit()
        drift.repaired_missing = len(drift.missing)
    if repair and delete_untracked and drift.untracked:
        refused = store.delete_versions(bucket.name, drift.untracked)
        drift.deleted_untracked = len(drift.untracked) - len(refused)
    return drift


def _packed_contents(
    session: Session, version_ids: list[int]
) -> dict[int, list[tuple[str, int, int, str]]]:
    """For the pack versions among these: (path, offset, size, sha256) of each content."""
    found: dict[int, list[tuple[str, int, int, str]]] = {}
    rows = session.execute(
        select(File.object_version_id, File.path, File.pack_offset, File.size, File.sha256)
        .where(
            in_ids(File.object_version_id, version_ids),
            File.pack_offset.is_not(None),
            ~File.is_duplicate,
        )
        .order_by(File.object_version_id, File.pack_offset)
    )
    for version_id, path, offset, size, sha in rows:
        found.setdefault(int(version_id or 0), []).append((path, int(offset or 0), size, sha))
    return found


def _check_tags(
    session: Session,
    store: ObjectStore,
    bucket: Bucket,
    catalog: dict[tuple[str, str], tuple[int, int, str]],
    checked: list[tuple[str, str]],
    drift: Drift,
    *,
    repair: bool,
) -> None:
    """The tags of the checked versions that are their object's latest live one."""
    ids = {catalog[k][0]: k for k in checked}
    newest = set(
        session.scalars(
            select(func.max(ObjectVersion.id))
            .where(
                ObjectVersion.object_id.in_(
                    select(ObjectVersion.object_id).where(in_ids(ObjectVersion.id, list(ids)))
                ),
                ObjectVersion.deleted_at.is_(None),
            )
            .group_by(ObjectVersion.object_id)
        )
    )
    recorded: dict[int, dict[str, str]] = {}
    for row_id, tag_key, value in session.execute(
        select(Tag.version_id, Tag.key, Tag.value).where(in_ids(Tag.version_id, list(newest)))
    ):
        recorded.setdefault(row_id, {})[tag_key] = value
    for version_row in sorted(newest & set(ids)):
        key, version_id = ids[version_row]
        want = recorded.get(version_row, {})
        have = store.get_tags(bucket.name, key, version_id)
        if have != want:
            drift.tag_drift.append((key, version_id, f"tags are {have}, recorded {want}"))
            if repair:
                store.set_tags(bucket.name, key, version_id, want)
                drift.repaired_tags += 1

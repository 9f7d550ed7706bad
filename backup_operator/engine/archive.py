"""A folder of a job's tree as a ZIP archive, streamed as it is written: nothing is
staged on disk or held whole in memory (entries carry data descriptors, so the archive
needs no seeking). Each file's bytes are checked against its SHA-256 on the way; one
that does not match ends the stream, so a broken archive is never mistaken for a
whole one."""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Iterator
from typing import IO, cast

from sqlalchemy.orm import Session, sessionmaker

from ..catalog.jobs import get_job
from ..catalog.tree import Stored, folder_path, stored_files
from ..storage import ObjectStore

# Entries of 2 GiB and more are written as ZIP64 (the size is known before the bytes).
ZIP64_FROM = 2**31


class _Chunks:
    """What the archive writes, handed on in pieces: a write-only, unseekable stream."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.pieces.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        pieces, self.pieces = self.pieces, []
        yield from pieces


def _content(store: ObjectStore, item: Stored) -> Iterator[bytes]:
    if item.bucket is None or item.key is None or item.version_id is None:
        raise ValueError(f"{item.path}: its content is not stored")
    if item.offset is None:
        yield from store.content(item.bucket, item.key, item.version_id)
    else:
        yield store.read_range(item.bucket, item.key, item.version_id, item.offset, item.size)


def _entry(item: Stored, within: str) -> zipfile.ZipInfo:
    moment = time.gmtime((item.mtime_ns or 0) / 1e9)
    info = zipfile.ZipInfo(item.path[len(within) :], date_time=tuple(moment[:6]))  # type: ignore[arg-type]
    if moment.tm_year < 1980:  # ZIP cannot say earlier
        info.date_time = (1980, 1, 1, 0, 0, 0)
    info.external_attr = ((item.mode or 0o644) & 0xFFFF) << 16
    info.file_size = item.size
    return info


def zip_of_folder(
    sessions: sessionmaker[Session], store: ObjectStore, job_id: int, path: str
) -> Iterator[bytes]:
    """The files under `path` in the job's tree, as a ZIP archive's bytes in order."""
    within = folder_path(path)
    chunks = _Chunks()
    writable = cast(IO[bytes], chunks)
    with sessions() as session, zipfile.ZipFile(writable, "w", zipfile.ZIP_STORED) as archive:
        job = get_job(session, job_id)
        for item in stored_files(session, job, prefix=within):
            digest = hashlib.sha256()
            with archive.open(
                _entry(item, within), "w", force_zip64=item.size >= ZIP64_FROM
            ) as out:
                for piece in _content(store, item):
                    digest.update(piece)
                    out.write(piece)
                    yield from chunks.drain()
            if digest.hexdigest() != item.sha256:
                raise ValueError(f"{item.path}: its stored content is not what was backed up")
            yield from chunks.drain()
    yield from chunks.drain()  # the central directory

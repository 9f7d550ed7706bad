"""Packs: the contents of small files written together into one S3 object.

One PUT stores hundreds of small files (the S3 server's cost per request, not per byte,
is what bounds one-object-per-file backups); `packformat` is their layout. The catalog
records each file's pack version and offset; restores read ranges of packs.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..catalog.objects import Upload
from ..packformat import pack_key, sealed
from ..specs.objects import Lock
from ..storage import ObjectStore

IN_FLIGHT = 4  # packs being uploaded at once: what bounds a backup's memory


def strongest(locks: list[Lock]) -> Lock | None:
    """A pack is locked at least as long, and as strictly, as each content in it."""
    if not locks:
        return None
    modes = {lock.mode for lock in locks if lock.mode}
    mode = "COMPLIANCE" if "COMPLIANCE" in modes else ("GOVERNANCE" if modes else None)
    until = max((lock.retain_until for lock in locks if lock.retain_until), default=None)
    return Lock(mode, until, any(lock.legal_hold for lock in locks))


@dataclass
class _Pack:
    buffer: bytearray
    entries: list[tuple[str, int, int]]  # sha256, offset, size
    locks: list[Lock]


class Packer:
    """Collects contents into packs of about `pack_size` bytes and uploads each full one
    on `pool`, as many at a time as `slots` allow (IN_FLIGHT, shared by the packers of a
    backup); `finish()` answers the uploads under way."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        pool: ThreadPoolExecutor,
        slots: threading.BoundedSemaphore,
        *,
        pack_size: int,
        tags: dict[str, str],
        uploaded: Callable[[int], None],
    ) -> None:
        self.store = store
        self.bucket = bucket
        self.pool = pool
        self.pack_size = pack_size
        self.tags = tags
        self.uploaded = uploaded
        self._current = _Pack(bytearray(), [], [])
        self._futures: list[Future[Upload]] = []
        self._slots = slots

    def add(self, data: bytes, sha256: str, lock: Lock | None) -> None:
        pack = self._current
        pack.entries.append((sha256, len(pack.buffer), len(data)))
        pack.buffer += data
        if lock is not None:
            pack.locks.append(lock)
        if len(pack.buffer) >= self.pack_size:
            self._send()

    def _send(self) -> None:
        pack, self._current = self._current, _Pack(bytearray(), [], [])
        if not pack.entries:
            return
        self._slots.acquire()  # waits while IN_FLIGHT packs are on their way
        try:
            self._futures.append(self.pool.submit(self._upload, pack))
        except BaseException:
            self._slots.release()
            raise

    def _upload(self, pack: _Pack) -> Upload:
        try:
            body = sealed(pack.buffer, pack.entries)
            key = pack_key()
            lock = strongest(pack.locks)
            version_id, etag = self.store.put(
                self.bucket, key, io.BytesIO(body), len(body), lock=lock, tags=self.tags
            )
            self.uploaded(len(body))
            return Upload(
                key,
                version_id,
                len(body),
                hashlib.sha256(body).hexdigest(),
                etag,
                lock,
                tuple((sha, offset) for sha, offset, _ in pack.entries),
            )
        finally:
            self._slots.release()

    def finish(self) -> list[Future[Upload]]:
        """Send the last pack; answer every pack's upload (the caller records the packs,
        or removes them on an error)."""
        self._send()
        return self._futures

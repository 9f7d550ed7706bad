"""Back up a directory tree into a versioned bucket.

Per batch of files: look up what this job (on a resume) and the last completed job of
the same source already know; hash what changed, in parallel; register the batch in
bulk (content already in the bucket becomes a duplicate and is not uploaded); upload
the new content in parallel; record the versions in bulk; commit; heartbeat. A worker
killed mid-job leaves every committed batch recorded, so the job's next worker
uploads none of it again.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import resource
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..catalog import lineage
from ..catalog.files import FileIn, FileRecord, register_files, stored_contents, stored_sizes
from ..catalog.jobs import forget_failures, record_failures, save_stats
from ..catalog.models import SIZES_INDEXED_FROM, BackupJob, Bucket, File, FileChange, ObjectVersion
from ..catalog.objects import (
    HashingReader,
    Upload,
    object_key,
    record_versions,
    recorded_versions,
)
from ..catalog.retention import lock_for, locking_policies
from ..catalog.stats import FAILURE_KINDS, REPORT_PATHS, JobStats, Problem
from ..errors import Unavailable
from ..retry import retrying, tries_within
from ..settings import Settings
from ..specs.objects import Lock
from ..storage import PARALLEL_PARTS, PART_SIZE, ObjectStore, part_size_for
from .hashing import ATTEMPTS, ChangedWhileReading, Hashed, hash_file, head_digest, signature
from .packs import IN_FLIGHT, Packer
from .walk import Entry, Kind, walk

logger = logging.getLogger(__name__)

LARGE_FILE = 5 * 1024**3  # beyond S3's single PUT limit: multipart only
# Problems in FAILURE_KINDS leave a file out of the backup: the job partially failed.
# The others (symlinks, special files, empty directories, ...) are reported, by design.


CHECKPOINT_SECONDS = 1.0
# What the progress callback is told, besides the files seen.
PROGRESS = {"bytes_read", "bytes_uploaded", "uploads", "failed_files"}

# Files from this size on are hashed by the pool of hash workers (see _prepare).
HASH_ON_POOL_FROM = 1024 * 1024
MIN_BATCH_BYTES = 8 * 1024 * 1024
# Batches read or sent but not recorded yet.
PIPELINE_DEPTH = 2


class SourceMissing(Exception):
    pass


@dataclass(frozen=True)
class Options:
    rehash: bool = False
    batch_files: int = 1000
    hash_workers: int = 4
    upload_workers: int = 16
    # Called after each batch with the counters so far (the console's progress line).
    progress: Callable[[dict[str, Any]], None] | None = None
    # Where the source is mounted on this worker, when not at the job's `source_system`
    # (a pod mounts a volume at its own path; the job names the volume).
    source: str | None = None
    # How long a database or store outage is waited out, batch by batch, before the run
    # gives up (the scheduler sets half the heartbeat timeout: within it no other worker
    # takes the job over, so no attempt is spent).
    outage_seconds: float = 30.0
    # Files smaller than this go into packs of about `pack_size` bytes (0: none); a
    # job's own `pack_threshold` wins.
    pack_threshold: int = 1024 * 1024
    pack_size: int = 8 * 1024 * 1024
    # A batch also ends at this many bytes of files to read: small files' contents are
    # held from their hashing to their pack.
    batch_bytes: int = 64 * 1024 * 1024
    # File contents a run holds at once (BACKUP_MEMORY_MIB), roughly: under a smaller
    # budget batches hold fewer bytes (so fewer large files are uploaded at once).
    memory_bytes: int = 256 * 1024 * 1024

    @classmethod
    def for_settings(cls, settings: Settings, **options: Any) -> Options:
        return cls(
            outage_seconds=settings.job_heartbeat_timeout_seconds / 2,
            pack_threshold=settings.pack_threshold_bytes,
            pack_size=settings.pack_size_bytes,
            memory_bytes=settings.backup_memory_mib * 1024 * 1024,
            **options,
        )


@dataclass
class Report:
    """Counters of one run, carried over from earlier attempts of the same job.
    Worker threads update it, hence the lock."""

    bytes_read: int = 0
    bytes_uploaded: int = 0
    uploads: int = 0
    bytes_packed: int = 0
    files: int = 0
    problems: dict[str, Problem] = field(default_factory=dict)
    # Failures not yet recorded in the catalog: (path, kind, reason).
    unrecorded: list[tuple[str, str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, read: int = 0, uploaded: int = 0, uploads: int = 0, packed: int = 0) -> None:
        with self.lock:
            self.bytes_read += read
            self.bytes_uploaded += uploaded
            self.uploads += uploads
            self.bytes_packed += packed

    def problem(self, kind: str, path: str, reason: str | None = None) -> None:
        with self.lock:
            self._problem(kind, path, reason)

    def _problem(self, kind: str, path: str, reason: str | None) -> None:
        entry = self.problems.setdefault(kind, Problem())
        entry.count += 1
        if kind in FAILURE_KINDS:
            self.unrecorded.append((path, kind, reason))
        if len(entry.paths) < REPORT_PATHS:
            entry.paths.append(f"{path}: {reason}" if reason else path)

    @property
    def failed(self) -> int:
        return sum(self.problems[kind].count for kind in FAILURE_KINDS if kind in self.problems)

    @classmethod
    def resumed(cls, stats: JobStats) -> Report:
        return cls(
            bytes_read=stats.bytes_read, bytes_uploaded=stats.bytes_uploaded, uploads=stats.uploads
        )


@dataclass(frozen=True)
class Known:
    id: int
    size: int
    mtime_ns: int | None
    inode: int | None
    mode: int | None
    sha256: str
    change: FileChange
    stored: bool  # its content is in the bucket (verify may have found it gone)


def _known(session: Session, where: ColumnElement[bool], paths: list[str]) -> dict[str, Known]:
    if not paths:
        return {}
    canonical = aliased(File)
    stored = func.coalesce(canonical.object_version_id, File.object_version_id).is_not(None)
    rows = session.execute(
        select(
            File.id,
            File.path,
            File.size,
            File.mtime_ns,
            File.inode,
            File.mode,
            File.sha256,
            File.change,
            stored,
        )
        .outerjoin(canonical, canonical.id == File.canonical_file_id)
        .where(where, File.path.in_(paths), File.change != FileChange.DELETED)
    )
    return {r[1]: Known(r[0], *r[2:]) for r in rows}


def _same_stat(entry: Entry, known: Known) -> bool:
    return (entry.size, entry.mtime_ns, entry.inode, entry.mode) == (
        known.size,
        known.mtime_ns,
        known.inode,
        known.mode,
    )


def _batches(entries: Iterator[Entry], size: int, max_bytes: int) -> Iterator[list[Entry]]:
    batch: list[Entry] = []
    held = 0
    for entry in entries:
        batch.append(entry)
        held += entry.size
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


class Prepared(NamedTuple):
    to_register: list[FileIn]
    contents: dict[str, bytes]  # small files' contents, by path
    by_path: dict[str, Entry]
    # Large files no stored content can equal: hashed while they upload (see _read_once).
    unhashed: list[tuple[Entry, FileChange]]


# A file uploaded while it was hashed: its registration, now with its sha256.
HashedUpload = tuple[FileIn, Upload]


class Sent(NamedTuple):
    """A file's upload: its version ("" if the upload failed as the file shrank), the
    hash and size of what was read, and whether the file stayed the same throughout."""

    version_id: str
    etag: str | None
    sha256: str
    size: int
    mtime_ns: int
    inode: int
    unchanged: bool


class Storing:
    """A batch's new contents on their way to the bucket: its packs and large files on
    the upload pool. `wait()` answers the uploads, the paths that could not be stored
    (changed or unreadable: not registered) and the files hashed as they uploaded; on an
    error it removes what did upload."""

    def __init__(self, remove: Callable[[list[Upload]], None]) -> None:
        self.remove = remove
        self.packs: list[Future[Upload]] = []
        self.large: list[tuple[str, Future[Upload | None]]] = []
        self.unhashed: list[tuple[Entry, Future[HashedUpload | None]]] = []
        self.dropped: set[str] = set()

    def wait(self) -> tuple[list[Upload], set[str], list[FileIn]]:
        uploads: list[Upload] = []
        hashed: list[FileIn] = []
        failed: BaseException | None = None
        for future in self.packs:
            try:
                uploads.append(future.result())
            except BaseException as error:
                failed = failed or error
        for path, large in self.large:
            try:
                if (upload := large.result()) is not None:
                    uploads.append(upload)
                else:
                    self.dropped.add(path)
            except BaseException as error:
                failed = failed or error
        for _, unhashed in self.unhashed:
            try:
                if (done := unhashed.result()) is not None:
                    hashed.append(done[0])
                    uploads.append(done[1])
            except BaseException as error:
                failed = failed or error
        if failed is not None:
            self.remove(uploads)
            raise failed
        return uploads, self.dropped, hashed


class Staged(NamedTuple):
    """A batch whose new contents are being uploaded, its files not yet recorded."""

    to_register: list[FileIn]
    by_path: dict[str, Entry]
    # The new contents, by sha256, and their uploads under way (None: to be uploaded
    # when the batch is recorded, reading them again).
    new: dict[str, FileIn]
    storing: Storing | None
    unhashed: list[tuple[Entry, FileChange]]


class _End:
    """What the pipeline answers once the walk has ended."""


class ByteBudget:
    """Bytes held at once by large uploads (minio holds a whole part in memory), at
    most `limit`: an upload waits until its bytes fit, or until it is the only one."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def holding(self, size: int) -> Iterator[None]:
        with self.changed:
            self.changed.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            with self.changed:
                self.held -= size
                self.changed.notify_all()


T = TypeVar("T")


class Backup:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ObjectStore,
        job_id: int,
        heartbeat: Callable[[], None],
        options: Options,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.job_id = job_id
        self.heartbeat = heartbeat
        self.options = options
        with sessions() as session:
            job = session.get_one(BackupJob, job_id)
            self.job_stats = job.stats
            self.source = options.source or job.source_system
            self.prefix = job.key_prefix
            self.tags = dict(job.tags or {})
            self.bucket_id = job.bucket_id
            bucket = session.get_one(Bucket, job.bucket_id)
            self.bucket = bucket.name
            self.lock_enabled = bucket.object_lock
            self.lock_policies = locking_policies(
                session, bucket_id=job.bucket_id, source_system=job.source_system
            )
            # Only a resumed job can have files of its own already.
            self.resumed = job.attempts > 1 or bool(
                session.scalar(select(File.id).where(File.job_id == job_id).limit(1))
            )
            if not self.resumed:  # its parent is fixed at its first start
                lineage.start(session, job)
                session.commit()
            self.parent_id = job.parent_job_id
            self.source_id = job.source_id
            self.parent_seq = lineage.parent_seq(session, job)
            self.parent_tree = (
                None
                if self.parent_seq is None
                else lineage.tree_at(self.source_id, self.parent_seq)
            )
            self.rehash = options.rehash or job.rehash
            self.pack_threshold = (
                options.pack_threshold if job.pack_threshold is None else job.pack_threshold
            )
        # The parent's states this run saw (unchanged or replaced); the others are gone.
        self.seen = array("q")
        # Contents the batches sent last uploaded (they may not be recorded yet), and
        # their files hashed as they upload, by size.
        self.uploaded_before: collections.deque[set[str]] = collections.deque(maxlen=PIPELINE_DEPTH)
        self.unhashed_before: collections.deque[list[tuple[int, Future[HashedUpload | None]]]] = (
            collections.deque(maxlen=PIPELINE_DEPTH)
        )
        # (size, digest of the head) of every large file this run has sent or hashed;
        # (size, None) for those hashed without a look at their head.
        self.large_seen: set[tuple[int, bytes | None]] = set()
        # Files from this size on may be uploaded while they are hashed (see _read_once).
        self.read_once_from = max(self.pack_threshold, SIZES_INDEXED_FROM)
        self.report = Report.resumed(self.job_stats)
        self.checkpointed_at = -CHECKPOINT_SECONDS
        self.tries = tries_within(options.outage_seconds)
        self.hashers = ThreadPoolExecutor(options.hash_workers, thread_name_prefix="hash")
        self.uploaders = ThreadPoolExecutor(options.upload_workers, thread_name_prefix="upload")
        # Whether the last batch's small files came from the disk (see _hash_small).
        self.small_from_disk = False
        # Packs being uploaded at once, whichever batch they are of.
        self.pack_slots = threading.BoundedSemaphore(IN_FLIGHT)
        # Held at once: the small contents of the batch being read and of the one being
        # sent (in packs), as many bytes of large files under upload (of any batch), and
        # the packs that end batches: PIPELINE_DEPTH + 1 batches and what is fixed.
        fixed = (IN_FLIGHT + 1) * options.pack_size + PARALLEL_PARTS * PART_SIZE
        self.batch_bytes = min(
            options.batch_bytes,
            max(MIN_BATCH_BYTES, (options.memory_bytes - fixed) // (PIPELINE_DEPTH + 1)),
        )
        self.large_bytes = ByteBudget(self.batch_bytes)

    def run(self) -> JobStats:
        started = time.monotonic()
        if not os.path.isdir(self.source):
            raise SourceMissing(
                f"source {self.source!r} is not a readable directory on this worker"
            )
        with self.sessions() as session:
            forget_failures(session, self.job_id)  # a resumed run tries those files again
            session.commit()
        # A pipeline of three stages, each on its own thread: a batch is read and hashed
        # while the one before uploads its new contents and the one before that is
        # recorded (in order: a content uploaded by a batch not yet recorded is not
        # uploaded again, see _send). Waiting for a pack's PUT held the reading up for
        # half its time when both were one stage.
        readers = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        senders = ThreadPoolExecutor(1, thread_name_prefix="send")
        staged: collections.deque[Future[Staged | _End | None]] = collections.deque()
        try:
            files = self._classify(walk(self.source))
            # Walked on the reading thread too, batch by batch, so the recording does
            # not wait for the walk.
            batches = _batches(files, self.options.batch_files, self.batch_bytes)
            while True:
                staged.append(senders.submit(self._send, readers.submit(self._read, batches)))
                if len(staged) > PIPELINE_DEPTH:
                    if isinstance(oldest := staged.popleft().result(), _End):
                        break  # (and so are those behind it)
                    self._commit(oldest)
            self._retrying(self._record_deleted, "recording deleted files")
            self._retrying(functools.partial(self._checkpoint, final=True), "checkpoint")
        except BaseException:
            readers.shutdown(cancel_futures=True)
            senders.shutdown(cancel_futures=True)  # waits for the upload under way
            for future in staged:
                if not future.cancelled() and future.exception() is None:
                    unrecorded = future.result()
                    if isinstance(unrecorded, Staged) and unrecorded.storing is not None:
                        with contextlib.suppress(Exception):  # (it removes them itself)
                            self._remove(unrecorded.storing.wait()[0])  # leave none untracked
            raise
        finally:
            readers.shutdown(cancel_futures=True)
            senders.shutdown(cancel_futures=True)
            self.hashers.shutdown(cancel_futures=True)
            self.uploaders.shutdown(cancel_futures=True)
        seconds = time.monotonic() - started
        return self._retrying(functools.partial(self._result, seconds), "summing up")

    def _retrying(self, step: Callable[[], T], what: str) -> T:
        return retrying(step, what=f"job {self.job_id}: {what}", attempts=self.tries)

    def _commit(self, staged: Staged | None) -> None:
        if staged is not None:
            files, rows = self._store_and_record(staged)
            # Retention may have deleted a content between the lookup and the
            # registration (it spares only registered files): upload it again, and
            # register those files again (idempotent: it links them to it).
            lost = {row.sha256 for row in rows if row.object_version_id is None}
            if lost:
                again = [f for f in files if f.sha256 in lost]
                self._store_and_record(
                    Staged(again, staged.by_path, {f.sha256: f for f in again}, None, [])
                )
        self._retrying(self._checkpoint, "checkpoint")

    def _store_and_record(self, staged: Staged) -> tuple[list[FileIn], list[FileRecord]]:
        """Wait for the batch's uploads (again from the source, if they failed), then
        record it; answer the files registered and their rows."""
        first = staged.storing

        def upload() -> tuple[list[Upload], set[str], list[FileIn]]:
            nonlocal first
            if first is not None:
                storing, first = first, None
                return storing.wait()
            return self._store(staged.new, {}, staged.by_path, staged.unhashed).wait()

        uploads, dropped, hashed = self._retrying(upload, "uploading a batch")
        files = [f for f in staged.to_register if f.path not in dropped] + hashed
        try:
            return files, self._retrying(
                functools.partial(self._record, files, uploads), "recording a batch"
            )
        except BaseException:
            self._remove_unless_recorded(uploads)
            raise

    def _classify(self, entries: Iterator[Entry]) -> Iterator[Entry]:
        """Files go on to be backed up; everything else is reported as what it is."""
        for entry in entries:
            if entry.raw_path is not None:
                self.report.problem("non_utf8_names", entry.path, "stored under an escaped name")
            if entry.kind is Kind.FILE:
                if entry.size > LARGE_FILE:
                    self.report.problem("large_files", entry.path, f"{entry.size} bytes, multipart")
                yield entry
            elif entry.kind is Kind.SYMLINK:
                self.report.problem("symlinks", entry.path, "not followed, not stored")
            elif entry.kind is Kind.SPECIAL:
                self.report.problem("special_files", entry.path, "socket, device or FIFO: skipped")
            elif entry.kind is Kind.EMPTY_DIR:
                self.report.problem("empty_directories", entry.path, "not stored")
            else:
                self.report.problem("unreadable", entry.path, entry.error)

    def _prepare(self, entries: list[Entry]) -> Prepared | None:
        """What of a batch is to be registered: unchanged files are only counted; the
        others are hashed (small ones' contents kept for their packs)."""
        paths = [e.path for e in entries]
        large_sizes = sorted({e.size for e in entries if e.size >= self.read_once_from})
        with self.sessions() as session:
            mine = _known(session, File.job_id == self.job_id, paths) if self.resumed else {}
            parent = {} if self.parent_tree is None else _known(session, self.parent_tree, paths)
            sizes_stored = stored_sizes(session, self.bucket_id, large_sizes)
        to_register: list[FileIn] = []
        to_hash: list[Entry] = []
        unchanged: list[Known] = []
        recorded: list[str] = []
        for entry in entries:
            earlier = mine.get(entry.path)
            before = parent.get(entry.path)
            if earlier is not None:  # registered by an earlier attempt of this job
                if not _same_stat(entry, earlier):
                    self.report.problem(
                        "changed_while_reading",
                        entry.path,
                        "changed since an earlier attempt recorded it",
                    )
                elif earlier.stored:
                    recorded.append(entry.path)  # written whole, with its content
                else:
                    to_register.append(self._file_in(entry, earlier.sha256, earlier.change))
            elif (
                before is not None
                and before.stored
                and not self.rehash
                and _same_stat(entry, before)
            ):
                unchanged.append(before)  # its parent's state goes on: no row
            else:
                to_hash.append(entry)
        read_once = self._read_once(to_hash, parent, sizes_stored | {f.size for f in to_register})
        unhashed = [
            (entry, FileChange.NEW if entry.path not in parent else FileChange.CHANGED)
            for entry in to_hash
            if entry.path in read_once
        ]
        to_hash = [entry for entry in to_hash if entry.path not in read_once]
        contents: dict[str, bytes] = {}  # small files' contents, read once, for packs
        large = [entry for entry in to_hash if entry.size >= HASH_ON_POOL_FROM]
        on_pool = self.hashers.map(self._hash, large)
        results = self._hash_small([e for e in to_hash if e.size < HASH_ON_POOL_FROM])
        results.update(zip((entry.path for entry in large), on_pool, strict=True))
        for entry in to_hash:
            hashed = results[entry.path]
            if hashed is None:
                continue
            if hashed.data is not None:
                contents[entry.path] = hashed.data
            before = parent.get(entry.path)
            if before is None:
                change = FileChange.NEW
            elif before.sha256 != hashed.sha256:
                change = FileChange.CHANGED
            elif _same_stat(entry, before) and before.stored:
                unchanged.append(before)  # rehashed, and the very same state
                continue
            else:  # the same content with other metadata: a state of its own
                change = FileChange.UNCHANGED
            to_register.append(self._file_in(entry, hashed.sha256, change, hashed))
        with self.report.lock:  # after every query: a retried preparation counts once
            self.report.files += len(unchanged) + len(recorded) + len(to_register) + len(unhashed)
            self.seen.extend(known.id for known in unchanged)
            replaced = recorded + [f.path for f in to_register] + [e.path for e, _ in unhashed]
            self.seen.extend(parent[path].id for path in replaced if path in parent)
        if not to_register and not unhashed:
            return None
        return Prepared(to_register, contents, {e.path: e for e in entries}, unhashed)

    def _read_once(
        self, to_hash: list[Entry], parent: dict[str, Known], sizes_taken: set[int]
    ) -> set[str]:
        """The large files to upload while they are hashed, in one read: those that
        cannot be a duplicate. No stored content and no file registered in the batch has
        their size, their parent state had another one, and no other large file of this
        run has their size and head. The others are hashed first, so a duplicate is
        never sent."""
        heads: dict[str, tuple[int, bytes]] = {}
        for entry in to_hash:
            if entry.size < self.read_once_from:
                continue
            before = parent.get(entry.path)
            if entry.size in sizes_taken or (before is not None and before.size == entry.size):
                self.large_seen.add((entry.size, None))  # hashed first: like any of its size
                continue
            with contextlib.suppress(OSError):  # (hashing it reports it)
                heads[entry.path] = (entry.size, head_digest(entry.os_path))
        alike = collections.Counter(heads.values())
        chosen = {
            path
            for path, head in heads.items()
            if alike[head] == 1 and not {head, (head[0], None)} & self.large_seen
        }
        self.large_seen.update(heads.values())
        return chosen

    def _hash_small(self, entries: list[Entry]) -> dict[str, Hashed | None]:
        """Small files, while the large ones hash on the pool. From the page cache they
        are read on this thread: a pool costs more in handing the GIL over than the
        reading (100,000 files of 0-4 KB: 1.1 s here, 2.2 s on four threads); from the
        disk, four threads overlap the waits (9.6 s here, 4.4 s on four). Which it is
        the last batch told: its reads' blocks read from the disk."""
        blocks_before = resource.getrusage(resource.RUSAGE_SELF).ru_inblock
        hashed: Iterable[Hashed | None]
        if self.small_from_disk:
            share = max(1, len(entries) // (2 * self.options.hash_workers))
            parts = [entries[i : i + share] for i in range(0, len(entries), share)]
            hashed = itertools.chain.from_iterable(
                self.hashers.map(lambda part: [self._hash(e) for e in part], parts)
            )
        else:
            hashed = map(self._hash, entries)
        results = {entry.path: result for entry, result in zip(entries, hashed, strict=True)}
        # (a file read from the disk costs at least one 512-byte block, one in the page
        # cache none: more blocks than files, and at least an eighth came from the disk)
        blocks = resource.getrusage(resource.RUSAGE_SELF).ru_inblock - blocks_before
        self.small_from_disk = blocks > len(entries)
        return results

    def _read(self, batches: Iterator[list[Entry]]) -> Prepared | _End | None:
        """The next batch of the walk, read; _End after the last."""
        batch = next(batches, None)
        if batch is None:
            return _End()
        return self._retrying(functools.partial(self._prepare, batch), "reading a batch")

    def _send(self, prepared: Future[Prepared | _End | None]) -> Staged | _End | None:
        """Upload the contents of a read batch the bucket does not hold (one upload per
        content; the rest are duplicates). Its files are recorded afterwards, in order;
        the PIPELINE_DEPTH batches before may not be recorded yet: what they uploaded is
        not looked up but remembered."""
        batch = prepared.result()
        if batch is None or isinstance(batch, _End):
            return batch
        staged = self._retrying(functools.partial(self._upload_new, batch), "uploading a batch")
        self.uploaded_before.append(set(staged.new))
        storing = staged.storing
        self.unhashed_before.append(
            [] if storing is None else [(e.size, upload) for e, upload in storing.unhashed]
        )
        return staged

    def _upload_new(self, prepared: Prepared) -> Staged:
        """Start uploading the batch's new contents (packed, or each its own object);
        they are waited for when it is recorded (so a kill leaves untracked no more than
        the uploads of the PIPELINE_DEPTH + 1 batches under way)."""
        to_register, contents, by_path, unhashed = prepared
        uploaded_before = set().union(*self.uploaded_before)
        uploaded_before |= self._hashed_as_sent_before({f.size for f in to_register})
        with self.sessions() as session:
            shas = sorted({f.sha256 for f in to_register} - uploaded_before)
            stored = stored_contents(session, self.bucket_id, shas) | uploaded_before
        new: dict[str, FileIn] = {}
        for item in to_register:
            if item.sha256 not in stored:
                new.setdefault(item.sha256, item)
        storing = self._store(new, contents, by_path, unhashed)
        return Staged(to_register, by_path, new, storing, unhashed)

    def _hashed_as_sent_before(self, sizes: set[int]) -> set[str]:
        """The contents of the files of `sizes` that the batches before (maybe not yet
        recorded) upload while hashing them: a file hashed first because it is like one
        of them (same size and head) is a duplicate if it has that one's content. Known
        once that upload ends, so it is waited for."""
        contents: set[str] = set()
        for size, upload in itertools.chain.from_iterable(self.unhashed_before):
            if size in sizes:
                with contextlib.suppress(Exception):  # (its own batch reports it)
                    if (done := upload.result()) is not None:
                        contents.add(done[0].sha256)
        return contents

    def _record(self, files: list[FileIn], uploads: list[Upload]) -> list[FileRecord]:
        """Record a batch's new versions and register its files in one transaction:
        each file row is written once, with where its content is."""
        if not files:
            return []
        with self.sessions() as session:
            links = record_versions(session, self.bucket_id, uploads, self.tags, job_id=self.job_id)
            where = {sha: (version, offset) for sha, version, offset in links}
            rows = register_files(session, self.job_id, files, stored=where, whole_rows=False)
            session.commit()
            return rows

    def _store(
        self,
        pending: dict[str, FileIn],
        contents: dict[str, bytes],
        by_path: dict[str, Entry],
        unhashed: list[tuple[Entry, FileChange]],
    ) -> Storing:
        """Start uploading new contents: large files one object each, small ones in
        packs, all on the upload pool at once (small contents not in `contents` are read
        again from the source); and the `unhashed` files, hashed as they upload."""
        storing = Storing(self._remove)
        storing.large = [
            (item.path, self.uploaders.submit(self._upload, item, by_path[item.path]))
            for item in pending.values()
            if item.size >= self.pack_threshold
        ]
        storing.unhashed = [
            (entry, self.uploaders.submit(self._upload_hashing, entry, change))
            for entry, change in unhashed
        ]
        packer = Packer(
            self.store,
            self.bucket,
            self.uploaders,
            self.pack_slots,
            pack_size=self.options.pack_size,
            tags=self.tags,
            uploaded=lambda size: self.report.add(uploaded=size, uploads=1),
        )
        try:
            for sha, item in pending.items():
                if item.size >= self.pack_threshold:
                    continue
                data = contents.get(item.path)
                if data is None:  # not hashed in this run (registered earlier), or a retry
                    data = self._read_small(item, by_path[item.path])
                    if data is None:
                        storing.dropped.add(item.path)
                        continue
                self.report.add(packed=item.size)
                packer.add(data, sha, self._lock(object_key(self.prefix, item.path), item.path))
        finally:
            storing.packs = packer.finish()
        return storing

    def _lock(self, key: str, path: str) -> Lock | None:
        lock = lock_for(self.lock_policies, key, datetime.now(UTC))
        if lock is not None and not self.lock_enabled:
            self.report.problem("lock_not_applied", path, "bucket has no object lock")
            return None
        return lock

    def _read_small(self, row: FileIn, entry: Entry) -> bytes | None:
        try:
            with open(entry.os_path, "rb") as handle:
                data = handle.read(row.size + 1)
        except OSError as error:
            self.report.problem("unreadable", row.path, error.strerror)
            return None
        if len(data) != row.size or hashlib.sha256(data).hexdigest() != row.sha256:
            self.report.problem("changed_while_reading", row.path, "changed before its upload")
            return None
        return data

    def _file_in(
        self, entry: Entry, sha256: str, change: FileChange, hashed: Hashed | None = None
    ) -> FileIn:
        size = hashed.size if hashed else entry.size
        mtime_ns = hashed.mtime_ns if hashed else entry.mtime_ns
        return FileIn(
            path=entry.path,
            size=size,
            sha256=sha256,
            mtime=datetime.fromtimestamp(mtime_ns / 1e9, UTC),
            mtime_ns=mtime_ns,
            inode=hashed.inode if hashed else entry.inode,
            raw_path=entry.raw_path,
            change=change,
            mode=entry.mode,
        )

    def _hash(self, entry: Entry) -> Hashed | None:
        try:
            hashed = hash_file(entry.os_path, keep_below=self.pack_threshold)
        except ChangedWhileReading as error:
            self.report.problem("changed_while_reading", entry.path, str(error))
            return None
        except OSError as error:
            self.report.problem("unreadable", entry.path, error.strerror)
            return None
        self.report.add(read=hashed.size)  # what the source holds, not our re-reads
        return hashed

    def _upload(self, row: FileIn, entry: Entry) -> Upload | None:
        """Upload a hashed file, checking that what is sent is what was hashed."""
        key = object_key(self.prefix, row.path)
        lock = self._lock(key, row.path)
        try:
            sent = self._send_file(entry, key, lock)
        except OSError as error:
            self.report.problem("unreadable", row.path, error.strerror)
            return None
        if sent.unchanged and (sent.sha256, sent.size) == (row.sha256, row.size):
            self.report.add(uploaded=row.size, uploads=1)
            return Upload(key, sent.version_id, row.size, row.sha256, sent.etag, lock)
        # The file changed between hashing and upload: keep no content under its hash.
        if sent.version_id:
            self.store.delete_version(self.bucket, key, sent.version_id)
        self.report.problem("changed_while_reading", row.path, "changed before its upload")
        return None

    def _upload_hashing(self, entry: Entry, change: FileChange) -> HashedUpload | None:
        """Upload a file while hashing it (see _read_once): one that changes as it is
        read is sent again (what was sent removed), then given up on, as hash_file
        does."""
        key = object_key(self.prefix, entry.path)
        lock = self._lock(key, entry.path)
        for _ in range(ATTEMPTS):
            try:
                sent = self._send_file(entry, key, lock)
            except OSError as error:
                self.report.problem("unreadable", entry.path, error.strerror)
                return None
            self.report.add(read=sent.size)
            if sent.unchanged:
                self.report.add(uploaded=sent.size, uploads=1)
                hashed = Hashed(sent.sha256, sent.size, sent.mtime_ns, sent.inode, sent.size)
                upload = Upload(key, sent.version_id, sent.size, sent.sha256, sent.etag, lock)
                return self._file_in(entry, sent.sha256, change, hashed), upload
            if sent.version_id:
                self.store.delete_version(self.bucket, key, sent.version_id)
        self.report.problem(
            "changed_while_reading", entry.path, f"changed while being read, {ATTEMPTS} times"
        )
        return None

    def _send_file(self, entry: Entry, key: str, lock: Lock | None) -> Sent:
        """Upload a file as it is now, hashing what is read (OSError: it is unreadable)."""
        with open(entry.os_path, "rb") as handle:
            before = os.fstat(handle.fileno())
            size = before.st_size
            reader = HashingReader(handle)
            version_id, etag = "", None
            with self.large_bytes.holding(min(size, PARALLEL_PARTS * part_size_for(size))):
                try:
                    version_id, etag = self.store.put(
                        self.bucket, key, reader, size, lock=lock, tags=self.tags
                    )
                except Unavailable:
                    # A file that shrinks as it is read fails its upload: no outage.
                    if signature(os.stat(entry.os_path)) == signature(before):
                        raise
        after = os.stat(entry.os_path, follow_symlinks=False)
        return Sent(
            version_id,
            etag,
            reader.sha256.hexdigest(),
            size,
            after.st_mtime_ns,
            after.st_ino,
            unchanged=bool(version_id)
            and signature(before) == signature(after)
            and reader.size == size,
        )

    def _remove_unless_recorded(self, uploads: list[Upload]) -> None:
        """After a failed record: remove the uploads it did not record. A commit whose
        answer was lost may have recorded them all; when the catalog cannot say, they
        stay (untracked, which `verify` finds) rather than risk deleting stored data."""
        if not uploads:
            return
        try:
            with self.sessions() as session:
                recorded = recorded_versions(
                    session, self.bucket_id, [u.version_id for u in uploads]
                )
        except Exception:
            logger.warning(
                "job %s: %d uploads left in the bucket, recorded or not (verify finds them)",
                self.job_id,
                len(uploads),
            )
            return
        self._remove([u for u in uploads if (u.key, u.version_id) not in recorded])

    def _remove(self, uploads: list[Upload]) -> None:
        """Leave no untracked object behind."""
        for upload in uploads:
            try:
                self.store.delete_version(self.bucket, upload.key, upload.version_id)
            except Exception:
                logger.warning("could not remove unrecorded upload %s", upload.key)

    def _record_deleted(self) -> None:
        """Files of the parent that this run did not see: recorded as deleted in this job."""
        if self.parent_seq is None:
            return
        with self.report.lock:
            seen = sorted(set(self.seen))
        with self.sessions() as session:
            lineage.record_deletions(session, self.job_id, self.source_id, self.parent_seq, seen)
            session.commit()

    def _checkpoint(self, final: bool = False) -> None:
        """Save the counters and failures so far, at most every CHECKPOINT_SECONDS (a
        batch of small files takes milliseconds: saving each was a tenth of its time),
        and ask whether to go on (cancelled, stopped) at each batch."""
        if final or time.monotonic() - self.checkpointed_at >= CHECKPOINT_SECONDS:
            with self.report.lock:
                failures = list(self.report.unrecorded)
            with self.sessions() as session:
                save_stats(session, self.job_id, self._counters())
                record_failures(session, self.job_id, failures)
                session.commit()
            with self.report.lock:  # recorded: only now, so a retried checkpoint loses none
                del self.report.unrecorded[: len(failures)]
            self.checkpointed_at = time.monotonic()
        self.heartbeat()
        if self.options.progress is not None:
            progress = self._counters().model_dump(include=PROGRESS)
            self.options.progress({"files": self.report.files, **progress})

    def _counters(self) -> JobStats:
        return JobStats(
            bytes_read=self.report.bytes_read,
            bytes_uploaded=self.report.bytes_uploaded,
            uploads=self.report.uploads,
            failed_files=self.report.failed,
        )

    def _result(self, seconds: float) -> JobStats:
        with self.sessions() as session:
            # Its own rows: what is new, changed (or re-recorded) or deleted.
            counts = {
                change: count
                for change, count in session.execute(
                    select(File.change, func.count())
                    .where(File.job_id == self.job_id)
                    .group_by(File.change)
                )
            }
            # Counted from the catalog: an upload of an earlier attempt once, one cut off
            # by a kill (never recorded) not at all.
            uploads, uploaded = session.execute(
                select(func.count(), func.coalesce(func.sum(ObjectVersion.size), 0)).where(
                    ObjectVersion.job_id == self.job_id
                )
            ).one()
            duplicates, saved = session.execute(
                select(func.count(), func.coalesce(func.sum(File.size), 0)).where(
                    File.job_id == self.job_id,
                    File.is_duplicate,
                    File.change.in_([FileChange.NEW, FileChange.CHANGED]),
                )
            ).one()
        seen = self.report.files
        return self._counters().model_copy(
            update={
                "files_seen": seen,
                "unchanged": seen
                - counts.get(FileChange.NEW, 0)
                - counts.get(FileChange.CHANGED, 0),
                "new": counts.get(FileChange.NEW, 0),
                "changed": counts.get(FileChange.CHANGED, 0),
                "duplicate": duplicates,
                "deleted": counts.get(FileChange.DELETED, 0),
                "uploads": uploads,
                "bytes_uploaded": int(uploaded),
                "bytes_saved": int(saved),
                "duration_seconds": round(seconds + (self.job_stats.duration_seconds or 0), 3),
                "parent_job_id": self.parent_id,
                "problems": self.report.problems,
            }
        )


def run_backup(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    job_id: int,
    heartbeat: Callable[[], None],
    options: Options | None = None,
) -> JobStats:
    return Backup(sessions, store, job_id, heartbeat, options or Options()).run()

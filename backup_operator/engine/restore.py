"""Restore a completed job's tree (or one file, or a prefix) into a directory.

Each file is the state of the source as of that job, duplicates resolved to their
canonical content. Every file is written to a temporary name, its SHA-256 checked,
and only then renamed into place; an existing file is never overwritten unless asked.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ..catalog.jobs import get_job
from ..catalog.models import JobStatus
from ..catalog.tree import Stored, stored_files
from ..errors import Conflict, Invalid
from ..storage import ObjectStore

CHUNK = 1024 * 1024
REPORT_PATHS = 20


# Ranges of one pack closer than this are read as one (fewer GETs for a little more data);
# one read is at most MAX_READ bytes (memory: that times the workers) and MAX_READ_FILES
# files: small enough that a pack's files are written by several workers at once.
COALESCE_GAP = 1024 * 1024
MAX_READ = 4 * 1024 * 1024
MAX_READ_FILES = 128
# Files read from the catalog at a time, grouped by pack (memory: constant per window).
WINDOW = 5000


@dataclass
class RestoreResult:
    files: int = 0
    bytes: int = 0
    refused_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused_existing and not self.failed

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "refused_existing": len(self.refused_existing),
            "refused_paths": self.refused_existing[:REPORT_PATHS],
            "failed": len(self.failed),
            "failures": dict(list(self.failed.items())[:REPORT_PATHS]),
            "seconds": round(self.seconds, 3),
        }


class Destinations:
    """Where each file goes under the target, never outside it: `..` is refused by the
    path itself, a symlinked directory by where it resolves (once per directory, cached:
    per-file path resolution was a fifth of a small-file restore)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.inside = self.root.rstrip(os.sep) + os.sep  # what paths under it start with
        self.folders: dict[str, str] = {}  # directory made -> where it resolves

    def of(self, item: Stored) -> str:
        relative = os.fsdecode(item.raw_path) if item.raw_path is not None else item.path
        destination = os.path.normpath(os.path.join(self.root, relative))
        folder, name = os.path.split(destination)
        real = self.folders.get(folder)
        if real is None:
            real = os.path.realpath(folder)  # before making it: never a folder outside
            if not all((p + os.sep).startswith(self.inside) for p in (folder, real)):
                raise Invalid(f"{item.path!r} would be restored outside the target", field="path")
            os.makedirs(real, exist_ok=True)
            self.folders[folder] = real
        return os.path.join(real, name)


def _restore_one(store: ObjectStore, item: Stored, destination: str, overwrite: bool) -> int:
    """A file that is an object of its own, streamed from the store."""
    if item.version_id is None or item.bucket is None or item.key is None:
        raise LookupError("its content is not stored (never uploaded, or deleted)")
    chunks = store.content(item.bucket, item.key, item.version_id, CHUNK)
    return _place(item, chunks, destination, overwrite)


_temporaries = itertools.count()


def _temporary(folder: str) -> tuple[str, int]:
    """A new file, 0600, under a name of its own (one left by a crash is skipped)."""
    while True:
        name = os.path.join(folder, f".restore-{os.getpid()}-{next(_temporaries)}")
        try:
            return name, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue


def _place(item: Stored, chunks: Iterable[bytes], destination: str, overwrite: bool) -> int:
    """Write a file's content to a temporary name, check its SHA-256, give it its mode
    and mtime, then rename it into place. An existing file (or symlink: replaced, never
    followed) is refused unless `overwrite`."""
    if not overwrite and os.path.lexists(destination):
        raise FileExistsError(destination)
    temporary, out = _temporary(os.path.dirname(destination))
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            for chunk in chunks:
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                size += len(chunk)
            if digest.hexdigest() != item.sha256 or size != item.size:
                raise ValueError(
                    f"checksum mismatch: stored content has sha256 {digest.hexdigest()}"
                )
            if item.mode is not None:  # else 0600 stays: never wider than known
                os.fchmod(out, item.mode)
            if item.mtime_ns is not None:
                os.utime(out, ns=(item.mtime_ns, item.mtime_ns))
        finally:
            os.close(out)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return size


def _reads(items: list[Stored]) -> list[list[Stored]]:
    """A pack's wanted contents, in offset order, grouped into reads: neighbours closer
    than COALESCE_GAP share one ranged GET of at most MAX_READ bytes."""
    ordered = sorted(items, key=lambda item: item.offset or 0)
    groups: list[list[Stored]] = []
    for item in ordered:
        if groups:
            first, last = groups[-1][0], groups[-1][-1]
            start, end = first.offset or 0, (last.offset or 0) + last.size
            offset = item.offset or 0
            if (
                offset - end <= COALESCE_GAP
                and offset + item.size - start <= MAX_READ
                and len(groups[-1]) < MAX_READ_FILES
            ):
                groups[-1].append(item)
                continue
        groups.append([item])
    return groups


def _windows(items: Iterator[Stored]) -> Iterator[list[Stored]]:
    while window := list(itertools.islice(items, WINDOW)):
        yield window


def _target_directory(root: Path) -> Path:
    """The restore's target, made if missing; one that cannot hold files is refused."""
    if root.exists() and not root.is_dir():
        raise Invalid(f"{root} exists and is not a directory", field="target")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".restore-probe-"):
            pass
    except OSError as error:
        raise Invalid(
            f"cannot write into {root}: {error.strerror or type(error).__name__}", field="target"
        ) from None
    return root


def restore(
    session: Session,
    store: ObjectStore,
    job_id: int,
    target: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    path: str | None = None,
    overwrite: bool = False,
    workers: int = 8,
) -> RestoreResult:
    job = get_job(session, job_id)
    if job.forgotten_at is not None:
        raise Conflict(
            f"job {job_id} was forgotten by retention at {job.forgotten_at.isoformat()}; "
            "its content may be gone",
            field="job_id",
        )
    if job.status is not JobStatus.COMPLETED:
        raise Conflict(
            f"job {job_id} is {job.status.value}; only completed jobs are restored", field="job_id"
        )
    root = _target_directory(Path(target).resolve())
    destinations = Destinations(root)
    result = RestoreResult()
    started = time.monotonic()

    lock = threading.Lock()

    def outcome(item: Stored, restore_it: Callable[[str], int]) -> None:
        """Restore one file, counting it as restored, refused (it exists) or failed."""
        try:
            size = restore_it(destinations.of(item))
            with lock:
                result.bytes += size
                result.files += 1
        except FileExistsError:
            with lock:
                result.refused_existing.append(item.path)
        except Exception as error:
            with lock:
                result.failed[item.path] = f"{type(error).__name__}: {error}"

    def one(item: Stored) -> None:
        outcome(item, lambda to: _restore_one(store, item, to, overwrite))

    def packed(group: list[Stored]) -> None:
        """One ranged GET for a run of a pack's contents; each file written as it is cut."""
        first = group[0]
        start = first.offset or 0
        end = max((item.offset or 0) + item.size for item in group)
        try:
            data = store.read_range(first.bucket, first.key, first.version_id, start, end - start)  # type: ignore[arg-type]
        except Exception as error:
            with lock:
                for item in group:
                    result.failed[item.path] = f"{type(error).__name__}: {error}"
            return
        for item in group:
            at = (item.offset or 0) - start
            piece = memoryview(data)[at : at + item.size]
            outcome(item, lambda to, item=item, piece=piece: _place(item, [piece], to, overwrite))  # type: ignore[misc]

    def tasks(window: list[Stored]) -> list[Callable[[], None]]:
        """Plain objects one GET each (the largest first); packed contents by pack,
        coalesced."""
        plain = [i for i in window if i.offset is None or i.version_id is None]
        plain.sort(key=lambda item: item.size, reverse=True)
        by_pack: dict[tuple[str | None, str | None, str | None], list[Stored]] = {}
        for item in window:
            if item.offset is not None and item.version_id is not None:
                by_pack.setdefault((item.bucket, item.key, item.version_id), []).append(item)
        work: list[Callable[[], None]] = [functools.partial(one, item) for item in plain]
        for items in by_pack.values():
            work += [functools.partial(packed, group) for group in _reads(items)]
        return work

    # Windows follow one another without waiting for the last one's slowest file; the
    # queue of tasks not yet started is bounded, so memory is too.
    queued = threading.BoundedSemaphore(4 * workers)
    broken: list[BaseException] = []  # what no file's outcome caught: a bug, raised

    def done(future: Future[None]) -> None:
        queued.release()
        if (error := future.exception()) is not None:
            broken.append(error)

    with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
        for window in _windows(stored_files(session, job, prefix=prefix, path=path)):
            for task in tasks(window):
                queued.acquire()
                pool.submit(task).add_done_callback(done)
    if broken:
        raise broken[0]
    if path is not None and result.files + len(result.failed) + len(result.refused_existing) == 0:
        raise Invalid(f"job {job_id} has no file {path!r}", field="path")
    result.seconds = time.monotonic() - started
    return result

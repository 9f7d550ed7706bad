"""Hash a file, detecting a file that changes while it is read."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

CHUNK = 1024 * 1024
ATTEMPTS = 3
HEAD = 64 * 1024


class ChangedWhileReading(Exception):
    pass


@dataclass(frozen=True)
class Hashed:
    sha256: str
    size: int
    mtime_ns: int
    inode: int
    bytes_read: int
    # The content itself, for a file small enough to be packed: read once, hashed once.
    data: bytes | None = None


def signature(info: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file is written or replaced."""
    return info.st_size, info.st_mtime_ns, info.st_ino


def head_digest(path: bytes, length: int = HEAD) -> bytes:
    """SHA-256 of a file's first `length` bytes: two files whose heads differ are not
    duplicates, whatever the rest."""
    handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hashlib.sha256(os.read(handle, length)).digest()
    finally:
        os.close(handle)


def hash_file(path: bytes, keep_below: int = 0) -> Hashed:
    """SHA-256 of a file whose size, mtime and inode are the same before and after the
    read; a file that keeps changing is re-read, then given up on. The content of a file
    smaller than `keep_below` bytes is kept too. Plain descriptor reads: a small file
    costs a few system calls and no file object (most of a tree's files are small)."""
    bytes_read = 0
    for _ in range(ATTEMPTS):
        handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            before = os.fstat(handle)
            digest = hashlib.sha256()
            kept: list[bytes] | None = [] if before.st_size < keep_below else None
            size = 0
            want = before.st_size + 1  # a byte more than its size: a file that grew shows
            while True:
                request = min(want - size, CHUNK) if size < want else CHUNK
                chunk = os.read(handle, request)
                digest.update(chunk)
                size += len(chunk)
                if kept is not None:
                    kept.append(chunk)
                # A short read at (or past) the size is the end: a small file is one read.
                if not chunk or (len(chunk) < request and size >= before.st_size):
                    break
        finally:
            os.close(handle)
        bytes_read += size
        after = os.stat(path, follow_symlinks=False)
        if signature(before) == signature(after) and size == after.st_size:
            data = None if kept is None else b"".join(kept)
            return Hashed(
                digest.hexdigest(), size, after.st_mtime_ns, after.st_ino, bytes_read, data
            )
    raise ChangedWhileReading(f"changed while being read, {ATTEMPTS} times")

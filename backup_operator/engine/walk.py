"""Walk a source tree, streaming: one directory's entries in memory at a time.

Symlinks are not followed; sockets, devices and FIFOs are not files; names that are
not valid UTF-8 keep their bytes and get an escaped text form for the catalog and S3.
"""

from __future__ import annotations

import codecs
import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass


class Kind(enum.StrEnum):
    FILE = "file"
    SYMLINK = "symlink"
    SPECIAL = "special"  # socket, device, FIFO
    EMPTY_DIR = "empty_dir"
    UNREADABLE = "unreadable"  # a directory or file we may not read


@dataclass(frozen=True)
class Entry:
    kind: Kind
    path: str  # relative, '/'-separated, valid UTF-8
    os_path: bytes  # what to open
    raw_path: bytes | None = None  # the relative name's bytes, when not valid UTF-8
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    mode: int | None = None  # permission bits
    error: str | None = None


def _percent_escape(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError)
    bad = error.object[error.start : error.end]
    return "".join(f"%{byte:02X}" for byte in bad), error.end


# Not a backslash escape: some S3 servers turn '\' into '/' in keys.
codecs.register_error("backup-percent-escape", _percent_escape)


def _text(relative: bytes) -> tuple[str, bytes | None]:
    try:
        return relative.decode("utf-8"), None
    except UnicodeDecodeError:
        return relative.decode("utf-8", "backup-percent-escape"), relative


def walk(root: str | os.PathLike[str]) -> Iterator[Entry]:
    """Yield every entry below `root` in a stable (sorted, depth-first) order."""
    base = os.fsencode(root)
    pending: list[bytes] = [b""]
    while pending:
        relative_dir = pending.pop()
        directory = os.path.join(base, relative_dir) if relative_dir else base
        try:
            with os.scandir(directory) as listing:
                children = sorted(listing, key=lambda child: child.name, reverse=True)
        except OSError as error:
            path, raw = _text(relative_dir)
            yield Entry(Kind.UNREADABLE, path, directory, raw, error=error.strerror)
            continue
        if not children and relative_dir:
            path, raw = _text(relative_dir)
            yield Entry(Kind.EMPTY_DIR, path, directory, raw)
        subdirectories = []
        for child in reversed(children):  # sorted ascending
            relative = os.path.join(relative_dir, child.name) if relative_dir else child.name
            path, raw = _text(relative)
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as error:
                yield Entry(Kind.UNREADABLE, path, child.path, raw, error=error.strerror)
                continue
            if stat.S_ISLNK(info.st_mode):
                yield Entry(Kind.SYMLINK, path, child.path, raw)
            elif stat.S_ISDIR(info.st_mode):
                subdirectories.append(relative)
            elif stat.S_ISREG(info.st_mode):
                yield Entry(
                    Kind.FILE,
                    path,
                    child.path,
                    raw,
                    info.st_size,
                    info.st_mtime_ns,
                    info.st_ino,
                    stat.S_IMODE(info.st_mode),
                )
            else:
                yield Entry(Kind.SPECIAL, path, child.path, raw)
        pending.extend(reversed(subdirectories))

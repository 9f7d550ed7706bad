"""What `backup-operator` exits with: one table for every command."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0  # also when the reader of the output went away (`| head`)
    FAILED = 1  # the job failed, a restore left files out, verify found drift it kept
    USAGE = 2  # bad usage or settings (the message names the option or variable)
    UNAVAILABLE = 3  # PostgreSQL or the object store unreachable, in one line
    PARTIAL = 4  # the backup ran to its end, but some files could not be stored
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # a backup stopped by SIGTERM, its job handed back to be resumed

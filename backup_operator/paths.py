"""Where the service may read sources and write restores: only under the configured
roots (SOURCE_ROOTS, RESTORE_ROOTS). Paths are absolute, and judged after symlinks are
resolved, so `..` or a link cannot lead out. The console is not confined: a local user
acts for themself."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import Invalid

# Never a source or a target, whatever the roots: Kubernetes mounts service-account
# tokens and Secrets here; and the kernel's own filesystems.
NEVER = (Path("/var/run/secrets"), Path("/run/secrets"), Path("/proc"), Path("/sys"), Path("/dev"))


def absolute(path: str, *, field: str) -> str:
    if not os.path.isabs(path):
        raise Invalid(f"{path!r} is not an absolute path", field=field)
    return path


def confined(path: str, roots: Sequence[Path], *, field: str, setting: str) -> Path:
    """`path`, resolved, if it lies under one of `roots`; else Invalid naming `field`
    and how to allow it."""
    absolute(path, field=field)
    if not roots:
        raise Invalid(
            f"{path} is refused: no {setting} are configured (set {setting} to the "
            "directories this service may use)",
            field=field,
        )
    resolved = Path(os.path.realpath(path))
    for never in NEVER:
        real = Path(os.path.realpath(never))
        if resolved == real or resolved.is_relative_to(real):
            raise Invalid(f"{path} is refused: {never} is never backed up or written", field=field)
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or resolved.is_relative_to(real_root):
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise Invalid(f"{path} is outside {setting} ({allowed})", field=field)

"""A restore asked for over HTTP (the API or the web interface): into a directory under
the restore roots only, and of one file, a prefix, or the whole tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from .. import paths
from ..engine.restore import RestoreResult, restore
from ..errors import Invalid
from ..storage import ObjectStore


def restore_within(
    session: Session,
    store: ObjectStore,
    job_id: int,
    target: str,
    *,
    roots: Sequence[Path],
    path: str | None = None,
    prefix: str | None = None,
    overwrite: bool = False,
) -> RestoreResult:
    if path and prefix:
        raise Invalid("give path or prefix, not both", field="prefix")
    confined = paths.confined(target, roots, field="target", setting="RESTORE_ROOTS")
    return restore(
        session, store, job_id, str(confined), prefix=prefix, path=path, overwrite=overwrite
    )

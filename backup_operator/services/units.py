"""Units of work: the catalog's functions never commit; whoever calls them does, once
the whole change is made. A service that must order its commit against the object
store (services.buckets, objects, tags, prune, retention) commits at that point
itself; the block's own commit then finds nothing left to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.orm import Session, sessionmaker


@contextlib.contextmanager
def unit_of_work(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose changes are committed when the block ends, and rolled back
    (when the session closes) if it raises."""
    with sessions() as session:
        yield session
        session.commit()

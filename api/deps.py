"""Dependencies: a unit of work per request, the object store, the settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ..errors import Unavailable
from ..services.units import unit_of_work
from ..settings import Settings
from ..storage import ObjectStore


def get_session(request: Request) -> Iterator[Session]:
    with unit_of_work(request.app.state.sessions) as session:
        yield session


# One request, one unit of work, committed when the route is done but before the
# response is sent: a commit that fails is the client's error response (503), never a
# 201 for a write that was lost.
UnitOfWork = Depends(get_session, scope="function")


def get_store(request: Request) -> Iterator[ObjectStore]:
    """The store, for one of at most STORE_CONCURRENCY requests at a time: a hung store
    then holds only those workers, and the rest (catalog-only requests, health checks)
    go on; one more is told at once that the store is busy (503), not queued."""
    slots: threading.BoundedSemaphore = request.app.state.store_slots
    if not slots.acquire(timeout=1):
        limit = request.app.state.settings.store_concurrency
        raise Unavailable("object store", f"all {limit} store slots (STORE_CONCURRENCY) wait on it")
    try:
        yield request.app.state.store
    finally:
        slots.release()


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings

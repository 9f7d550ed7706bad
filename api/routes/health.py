from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ...errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


def _check_database(request: Request) -> str:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
        return "ok"
    except Exception as error:
        return f"unavailable: {type(error).__name__}"


def _check_store(request: Request) -> str:
    try:
        # A client of its own, with a short timeout: a hung store makes the answer
        # "unavailable" within READY_TIMEOUT_SECONDS, not after the uploads' timeout.
        request.app.state.probe_store.ping()
        return "ok"
    except Unavailable as error:
        return f"unavailable: {error.detail}"
    except Exception as error:  # e.g. credentials refused: not ready either
        return f"error: {type(error).__name__}"


READY_TIMEOUT_SECONDS = 1.5


async def _bounded(check: Any, request: Request) -> str:
    try:
        return str(
            await asyncio.wait_for(run_in_threadpool(check, request), READY_TIMEOUT_SECONDS + 0.3)
        )
    except TimeoutError:
        return f"unavailable: no answer within {READY_TIMEOUT_SECONDS}s"


@router.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Readiness: PostgreSQL and the object store both answer."""
    database, store = await asyncio.gather(
        _bounded(_check_database, request), _bounded(_check_store, request)
    )
    checks = {"database": database, "object_store": store}
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = str(request.app.state.settings.retry_after_seconds)
    return {"status": "ok" if ready else "unavailable", "checks": checks}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """This process's HTTP metrics, and the catalog's (see backup_operator.metrics)."""
    body = generate_latest() + generate_latest(request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

from __future__ import annotations

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
        request.app.state.store.ping()
        return "ok"
    except Unavailable as error:
        return f"unavailable: {error.detail}"
    except Exception as error:  # e.g. credentials refused: not ready either
        return f"error: {type(error).__name__}"


@router.get("/readyz")
async def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Readiness: PostgreSQL and the object store both answer."""
    checks = {
        "database": await run_in_threadpool(_check_database, request),
        "object_store": await run_in_threadpool(_check_store, request),
    }
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

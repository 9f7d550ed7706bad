"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db import make_engine, make_sessionmaker
from ..engine.backup import Options
from ..metrics import CatalogCollector
from ..services.notify import webhook_from
from ..services.runner import EngineRunner
from ..services.scheduler import JobRunner, Scheduler
from ..settings import Settings, get_settings
from ..storage import ObjectStore
from . import access_log, errors
from .auth import OPEN_PATHS, BearerAuth
from .middleware import HttpMiddleware
from .routes import buckets, files, health, jobs, objects, retention
from .schemas import ErrorBody
from .ui import pages

logger = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "backup_api_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "backup_api_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class TrailingSlash:
    """Serve `/x/` and `/x` alike, without redirects: the original API's clients call
    `POST /backup-jobs/` and `GET /backup-jobs/1`, and a redirect would drop a POST body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/") or "/"}
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


class Metrics(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)


ERROR_DESCRIPTIONS = {
    400: "bad request (for example two Authorization headers)",
    401: "no bearer token, or an unknown one",
    403: "a read-only token on an operation that changes something",
    404: "not found",
    409: "conflicts with the current state",
    422: "invalid input: each item names the field (`loc`) and the reason (`msg`)",
    503: "PostgreSQL or the object store is unavailable; retry after Retry-After seconds",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in ERROR_DESCRIPTIONS.items()
}


def _openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, declaring the bearer tokens every operation but the health
    checks needs."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "API_TOKENS or API_READ_ONLY_TOKENS",
            }
        }
        schema["security"] = [{"bearer": []}]
        for path in OPEN_PATHS:
            for operation in schema["paths"].get(path, {}).values():
                operation["security"] = []
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings | None = None,
    *,
    runner: JobRunner | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    access_log.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url(), pool_size=settings.db_pool_size)
        app.state.sessions = make_sessionmaker(engine)
        app.state.store = ObjectStore.from_settings(settings)
        app.state.store_slots = threading.BoundedSemaphore(settings.store_concurrency)
        app.state.probe_store = ObjectStore.from_settings(
            settings, probe_timeout=health.READY_TIMEOUT_SECONDS
        )
        app.state.metrics = CollectorRegistry(auto_describe=False)
        app.state.metrics.register(
            CatalogCollector(
                app.state.sessions,
                app.state.store,
                max_series=settings.metrics_max_series,
                max_age=settings.metrics_max_age_seconds,
            )
        )
        scheduler = None
        notifier = webhook_from(settings.webhook())
        if settings.scheduler_enabled:
            scheduler = Scheduler(
                app.state.sessions,
                runner=runner
                or EngineRunner(
                    app.state.sessions,
                    app.state.store,
                    Options.for_settings(settings),
                    source_roots=settings.source_roots,
                ),
                interval=settings.scheduler_interval_seconds,
                heartbeat_timeout=settings.job_heartbeat_timeout_seconds,
                notifier=notifier,
                max_attempts=settings.job_max_attempts,
            )
            scheduler.start()
        app.state.scheduler = scheduler
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            notifier.close(timeout=10)
            engine.dispose()

    app = FastAPI(
        title="MinIO backup catalog",
        version="0.1.0",
        description="Metadata of backups stored in MinIO: buckets, jobs, files, objects, "
        "versions, tags and retention.",
        lifespan=lifespan,
        redirect_slashes=False,
        responses=ERROR_RESPONSES,
    )
    app.openapi = lambda: _openapi_with_bearer(app)  # type: ignore[method-assign]
    app.state.settings = settings
    errors.install(app, page=pages.error_page)
    for module in (health, buckets, jobs, files, objects, retention):
        app.include_router(module.router)
    app.include_router(retention.runs_router)
    app.include_router(pages.router)
    app.mount("/ui/static", pages.static, name="ui-static")
    app.add_middleware(errors.RejectNul)
    app.add_middleware(Metrics)
    app.add_middleware(BearerAuth, settings=settings)
    app.add_middleware(TrailingSlash)
    return app

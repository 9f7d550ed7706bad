"""Domain errors and outages mapped to HTTP once, here. Every error body has the shape
of FastAPI's validation errors: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc

from ..db import is_unavailable
from ..errors import Conflict, DomainError, Invalid, NotFound, Unavailable

logger = logging.getLogger(__name__)

STATUS = {NotFound: 404, Conflict: 409, Invalid: 422}


def error_body(loc: list[str | int], msg: str, kind: str) -> dict[str, object]:
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}


def unavailable_response(request: Request, dependency: str, detail: str) -> JSONResponse:
    retry_after = request.app.state.settings.retry_after_seconds
    return JSONResponse(
        error_body(
            [dependency], f"{dependency} is unavailable ({detail}); retry later", "unavailable"
        ),
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> JSONResponse:
        status = next((code for cls, code in STATUS.items() if isinstance(error, cls)), 400)
        loc: list[str | int] = [error.field] if error.field else []
        return JSONResponse(error_body(loc, error.message, error.code), status_code=status)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, error: Unavailable) -> JSONResponse:
        logger.warning("%s %s: %s", request.method, request.url.path, error)
        return unavailable_response(request, error.dependency, error.detail)

    @app.exception_handler(exc.SQLAlchemyError)
    async def database_error(request: Request, error: exc.SQLAlchemyError) -> JSONResponse:
        if is_unavailable(error):
            logger.warning(
                "%s %s: database unavailable: %s",
                request.method,
                request.url.path,
                type(error).__name__,
            )
            return unavailable_response(request, "database", type(error).__name__)
        if isinstance(error, exc.IntegrityError):
            # A constraint caught a race the checks before it could not see.
            constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
            return JSONResponse(
                error_body(
                    [constraint or "body"], "conflicts with the current state; retry", "conflict"
                ),
                status_code=409,
            )
        logger.exception("%s %s: database error", request.method, request.url.path)
        return JSONResponse(error_body([], "internal database error", "internal"), status_code=500)

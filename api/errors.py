"""Domain errors and outages mapped to HTTP once, here. Every error body has the shape
of FastAPI's validation errors: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from ..db import is_unavailable
from ..errors import Conflict, DomainError, Invalid, NotFound, Unavailable
from .middleware import HttpMiddleware, in_web_interface

logger = logging.getLogger(__name__)

STATUS = {NotFound: 404, Conflict: 409, Invalid: 422}
HTTP_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


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


# A page for a domain error met in the web interface (its request and status), instead
# of the API's JSON body.
ErrorPage = Callable[[Request, int, DomainError], Response]


def install(app: FastAPI, *, page: ErrorPage | None = None) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own errors (a body that does not parse, a method not
        # allowed…) in the one documented shape.
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        loc: list[str | int] = ["body"] if "body" in detail else []
        kind = HTTP_KINDS.get(error.status_code, "error")
        return JSONResponse(
            error_body(loc, detail, kind), status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> Response:
        status = next((code for cls, code in STATUS.items() if isinstance(error, cls)), 400)
        if page is not None and in_web_interface(request.url.path):
            return page(request, status, error)
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


class RejectNul(HttpMiddleware):
    """No text the API takes may hold a NUL: PostgreSQL cannot store one, S3 refuses it
    in keys, and it truncates C strings downstream. The path, every query parameter and
    every string of a JSON body are checked before a route sees them; the answer is a
    422 naming where the NUL was."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        where: list[str | int] | None = None
        if "\x00" in scope["path"]:
            where = ["path"]
        for name, value in parse_qsl(
            scope["query_string"].decode("latin-1"), keep_blank_values=True
        ):
            if where is None and ("\x00" in value or "\x00" in name):
                where = ["query", name.replace("\x00", "")]
        headers = dict(scope["headers"])
        replay = receive
        if where is None and b"json" in headers.get(b"content-type", b""):
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            replay = _replaying(body)
            if b"\\u0000" in body or b"\x00" in body:
                try:
                    where = _nul_in(json.loads(body), ["body"])
                except ValueError:
                    where = None  # not JSON: the route's parser says so
        if where is None:
            await self.app(scope, replay, send)
            return
        response = JSONResponse(
            error_body(where, "must not contain a NUL character (\\u0000)", "value_error"),
            status_code=422,
        )
        await response(scope, replay, send)


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _nul_in(value: Any, where: list[str | int]) -> list[str | int] | None:
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return [*where, key.replace("\x00", "")]
            if found := _nul_in(item, [*where, key]):
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := _nul_in(item, [*where, index]):
                return found
    return None

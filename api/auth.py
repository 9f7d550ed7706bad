"""Bearer tokens: read-only tokens may GET, read-write tokens may do everything.

With no token configured (local development) the API is open and binds to loopback.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings
from .errors import error_body
from .middleware import HttpMiddleware

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _matches(token: str, candidates: list[str]) -> bool:
    # compare_digest against every candidate: timing does not reveal which matched
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


class BearerAuth(HttpMiddleware):
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.write = [t.get_secret_value() for t in settings.api_tokens]
        self.read = [t.get_secret_value() for t in settings.api_read_only_tokens]
        self.enabled = settings.auth_enabled

    def applies(self, scope: Scope) -> bool:
        return self.enabled and scope["path"] not in OPEN_PATHS

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(given) > 1:  # which one counts would differ between proxies and us
            await _deny(send, 400, "more than one Authorization header", "bad_request")
            return
        header = (given[0] if given else b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            await _deny(send, 401, "missing bearer token", "unauthorized")
            return
        if _matches(token, self.write):
            scope.setdefault("state", {})["actor"] = actor_of(token)
            await self.app(scope, receive, send)
        elif _matches(token, self.read):
            if scope["method"] in READ_METHODS:
                await self.app(scope, receive, send)
            else:
                await _deny(send, 403, "this token is read-only", "forbidden")
        else:
            await _deny(send, 401, "invalid bearer token", "unauthorized")


def actor_of(token: str) -> str:
    """Who acted, for audit entries: a fingerprint of the token, never the token."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def request_actor(request: Request) -> str:
    return str(getattr(request.state, "actor", "anonymous (no API tokens configured)"))


async def _deny(send: Send, status: int, message: str, kind: str) -> None:
    from starlette.responses import JSONResponse

    response = JSONResponse(
        error_body(["header", "authorization"], message, kind), status_code=status
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, object]:  # pragma: no cover - never called
    return {"type": "http.disconnect"}

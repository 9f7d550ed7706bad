"""Bearer tokens: read-only tokens may GET, read-write tokens may do everything.

With no token configured (local development) the API is open and binds to loopback.
The web interface (/ui) takes the same tokens, from its login's cookie; without one it
sends the browser to its login page.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import quote

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import Settings
from .errors import error_body
from .middleware import UI_PREFIX, HttpMiddleware, in_web_interface

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/ui/login"})
OPEN_PREFIXES = ("/ui/static/",)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UI_COOKIE = "ui_token"


def _matches(token: str, candidates: list[str]) -> bool:
    # compare_digest against every candidate: timing does not reveal which matched
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


class Tokens:
    """The configured tokens, and what a given one may do."""

    def __init__(self, settings: Settings) -> None:
        self.write = [t.get_secret_value() for t in settings.api_tokens]
        self.read = [t.get_secret_value() for t in settings.api_read_only_tokens]

    def may_write(self, token: str) -> bool:
        return _matches(token, self.write)

    def may_read(self, token: str) -> bool:
        return self.may_write(token) or _matches(token, self.read)


class BearerAuth(HttpMiddleware):
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.tokens = Tokens(settings)
        self.enabled = settings.auth_enabled

    def applies(self, scope: Scope) -> bool:
        path = scope["path"]
        return self.enabled and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(given) > 1:  # which one counts would differ between proxies and us
            await _deny(send, 400, "more than one Authorization header", "bad_request")
            return
        header = (given[0] if given else b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        in_ui = in_web_interface(scope["path"])
        if (scheme.lower() != "bearer" or not token) and in_ui:
            token, scheme = ui_cookie(scope), "bearer"
        if scheme.lower() != "bearer" or not token:
            if in_ui:
                await _to_login(scope, send)
            else:
                await _deny(send, 401, "missing bearer token", "unauthorized")
            return
        if self.tokens.may_write(token):
            scope.setdefault("state", {})["actor"] = actor_of(token)
            await self.app(scope, receive, send)
        elif self.tokens.may_read(token):
            if scope["method"] in READ_METHODS:
                await self.app(scope, receive, send)
            else:
                await _deny(send, 403, "this token is read-only", "forbidden")
        elif in_ui:
            await _to_login(scope, send)
        else:
            await _deny(send, 401, "invalid bearer token", "unauthorized")


def ui_cookie(scope: Scope) -> str:
    """The token the web interface's login stored, or ""."""
    for name, value in scope["headers"]:
        if name == b"cookie":
            try:
                found = SimpleCookie(value.decode("latin-1")).get(UI_COOKIE)
            except CookieError:
                return ""
            if found is not None:
                return found.value
    return ""


async def _to_login(scope: Scope, send: Send) -> None:
    from starlette.responses import RedirectResponse

    here = scope["path"] + (
        "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
    )
    response = RedirectResponse(f"{UI_PREFIX}/login?next={quote(here, safe='')}", status_code=303)
    await response({"type": "http"}, _no_receive, send)


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

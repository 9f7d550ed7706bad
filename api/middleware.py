"""The API's own ASGI middleware act on HTTP requests only; the rest (lifespan) passes."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.applies(scope):
            await self.http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def applies(self, scope: Scope) -> bool:
        return True

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


UI_PREFIX = "/ui"  # the web interface's pages


def in_web_interface(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")

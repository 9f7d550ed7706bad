"""Lists answer a JSON array (as the original API did) and say how to get the next
page in a `Link: <...>; rel="next"` header, with the cursor also in `X-Next-After`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Query, Request, Response

from ..catalog.pages import MAX_LIMIT, Page
from .schemas import INT64_MAX


class PageParams:
    def __init__(
        self,
        limit: int = Query(100, ge=1, le=MAX_LIMIT, description="page size"),
        after: int | None = Query(
            None, ge=0, le=INT64_MAX, description="cursor: the X-Next-After of the previous page"
        ),
    ) -> None:
        self.limit = limit
        self.after = after


def paginate(page: Page[Any], request: Request, response: Response) -> Sequence[Any]:
    if page.next_after is not None:
        next_url = request.url.include_query_params(after=page.next_after)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
        response.headers["X-Next-After"] = str(page.next_after)
    return page.items

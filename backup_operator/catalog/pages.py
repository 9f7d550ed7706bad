"""Keyset pagination: stable order by id, the next page starts after the last id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Select

T = TypeVar("T")

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_after: int | None  # pass as `after` to get the next page; None: this was the last


def page_of(rows: Sequence[T], limit: int, key: int | None) -> Page[T]:
    """`rows` was fetched with limit + 1; `key` is the id of rows[limit - 1]."""
    if len(rows) > limit:
        return Page(rows[:limit], key)
    return Page(rows, None)


def keyset(
    query: Select[tuple[T]], id_column: object, after: int | None, limit: int
) -> Select[tuple[T]]:
    if after is not None:
        query = query.where(id_column > after)  # type: ignore[operator]
    return query.order_by(id_column).limit(limit + 1)  # type: ignore[arg-type]

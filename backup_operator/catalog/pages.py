"""Keyset pagination: stable order by id, the next page starts after the last id."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")
S = TypeVar("S", bound=Select)  # type: ignore[type-arg]  # any row shape

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_after: int | None  # pass as `after` to get the next page; None: this was the last


def keyset(query: S, id_column: InstrumentedAttribute[int], after: int | None, limit: int) -> S:
    """Order by id and fetch one row more than asked, to know whether a next page exists."""
    if after is not None:
        query = query.where(id_column > after)
    return query.order_by(id_column).limit(limit + 1)


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], int]) -> Page[T]:
    if len(rows) > limit:
        return Page(rows[:limit], key(rows[limit - 1]))
    return Page(rows, None)


def scalar_page(
    session: Session,
    query: Select[Any],
    id_column: InstrumentedAttribute[int],
    *,
    after: int | None,
    limit: int,
) -> Page[Any]:
    """A page of ORM rows, each with an `id`."""
    rows = session.scalars(keyset(query, id_column, after, limit)).all()
    return page_of(rows, limit, lambda row: int(row.id))

"""A row by its id, or NotFound naming the field that gave the id."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

from ..errors import NotFound
from .models import Base

Row = TypeVar("Row", bound=Base)


def get_row(
    session: Session, model: type[Row], row_id: int, *, what: str, field: str, lock: bool = False
) -> Row:
    """`lock`: FOR UPDATE, read afresh from the database."""
    found = session.get(model, row_id, with_for_update=lock, populate_existing=lock)
    if found is None:
        raise NotFound(f"{what} {row_id} not found", field=field)
    return found

"""`column = ANY(:ids)` with the ids as one array parameter: lists of any length (an
IN list spends one parameter per id, and PostgreSQL takes at most 65,535)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY


def in_ids(column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    values = bindparam(None, list(ids), type_=ARRAY(BigInteger), unique=True)
    return column == any_(values)  # type: ignore[no-any-return]

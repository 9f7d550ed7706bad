"""SQL on the session's own connection, rows as psycopg named tuples: for the bulk paths,
where SQLAlchemy's per-row result processing would cost more than the statement."""

from __future__ import annotations

from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy.orm import Session


def named_rows(session: Session, statement: str, params: dict[str, Any]) -> list[Any]:
    """Run `statement` (psycopg placeholders) inside the session's transaction."""
    connection = session.connection().connection.driver_connection
    assert connection is not None
    with connection.cursor(row_factory=namedtuple_row) as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []

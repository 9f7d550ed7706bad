"""Database engine and sessions."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, exc
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a restarted Postgres costs one failed ping, not a failed request
        pool_timeout=5,
        connect_args={"connect_timeout": 3, "application_name": "minio-backup-operator"},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_unavailable(error: BaseException) -> bool:
    """A failure of the connection rather than of the statement."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.TimeoutError | exc.InterfaceError)

"""Retry an operation on outages (object store or database), with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc

from .db import is_unavailable
from .errors import Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RetriesExhausted(Exception):
    """An outage outlasted every retry; the message says what and why."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, Unavailable):
        return True
    return isinstance(error, exc.SQLAlchemyError) and is_unavailable(error)


def outage(error: BaseException) -> str | None:
    """One line saying which dependency is down, or None when `error` is no outage."""
    if isinstance(error, Unavailable | RetriesExhausted):
        return str(error)
    if is_transient(error):
        return f"the database is unavailable: {type(error).__name__}"
    return None


def tries_within(seconds: float, first_delay: float = 0.5, max_delay: float = 8.0) -> int:
    """How many tries `retrying`'s doubling delays fit in `seconds`."""
    tries, delay, spent = 1, first_delay, 0.0
    while spent + delay <= seconds:
        spent += delay
        delay = min(delay * 2, max_delay)
        tries += 1
    return tries


def retrying(
    operation: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    first_delay: float = 0.5,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise RetriesExhausted(f"{what} failed {attempts} times: {error}") from error
            logger.warning(
                "%s failed (%s); retry %d/%d in %.1fs", what, error, attempt, attempts - 1, delay
            )
            sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")

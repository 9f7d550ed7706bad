"""Retry an operation on outages (object store or database), with exponential backoff
and jitter (tenacity): the one place retries are made."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

from sqlalchemy import exc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

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


def backoff(first_delay: float, max_delay: float) -> wait_base:
    """Delays doubling from `first_delay` up to `max_delay`, each plus up to `first_delay`
    of jitter: workers that met one outage do not all retry at the same instants."""
    return wait_exponential(multiplier=first_delay, max=max_delay) + wait_random(0, first_delay)


def tries_within(seconds: float, first_delay: float = 0.5, max_delay: float = 8.0) -> int:
    """How many tries `retrying` makes so that its delays last `seconds` at least (the
    doubling delays without their jitter fit in `seconds`)."""
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
    retry_on: Callable[[BaseException], bool] = is_transient,
    level: int = logging.WARNING,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`operation()`, tried again (with `backoff`) while it fails with an error `retry_on`
    accepts, `attempts` times in all; then RetriesExhausted, saying `what` failed and why.
    Any other error is raised at once."""

    def announce(state: RetryCallState) -> None:
        logger.log(
            level,
            "%s failed (%s); retry %d/%d in %.1fs",
            what,
            state.outcome.exception() if state.outcome else None,
            state.attempt_number,
            attempts - 1,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def give_up(state: RetryCallState) -> NoReturn:
        error = state.outcome.exception() if state.outcome else None
        raise RetriesExhausted(f"{what} failed {attempts} times: {error}") from error

    return Retrying(
        stop=stop_after_attempt(attempts),
        wait=backoff(first_delay, max_delay),
        retry=retry_if_exception(retry_on),
        before_sleep=announce,
        retry_error_callback=give_up,
        sleep=sleep,
    )(operation)

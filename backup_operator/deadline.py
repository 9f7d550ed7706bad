"""Deadlines for work that can hang on a blocked store (a call waits out its socket
timeout, retried). The work runs in a thread of its own and names each step it takes;
past the deadline the caller stops waiting and learns what the work was blocked on, and
the work stops at its next step. A call already sent is not interrupted: what it does
still lands in the catalog, which therefore stays true to the store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The work did not finish in time; the message says what it was doing."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._abandoned = threading.Event()
        self.doing = "starting"

    def step(self, doing: str) -> None:
        """Between steps: raise once the time is up, else record the step now taken."""
        if self._abandoned.is_set() or time.monotonic() > self._ends:
            raise DeadlineExceeded(f"unfinished after {self.seconds:g}s, before {doing}")
        self.doing = doing

    def exceeded(self) -> str:
        return f"unfinished after {self.seconds:g}s, while {self.doing}"

    def abandon(self) -> None:
        self._abandoned.set()


def run_within(seconds: float, work: Callable[[Deadline], T]) -> T:
    """`work(deadline)`'s result or error; DeadlineExceeded when it outlasts `seconds`."""
    deadline = Deadline(seconds)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = work(deadline)
        except BaseException as error:  # handed to the waiting caller
            outcome["error"] = error

    thread = threading.Thread(target=target, name="within-deadline", daemon=True)
    thread.start()
    thread.join(max(seconds, 0))
    if thread.is_alive():
        deadline.abandon()
        raise DeadlineExceeded(deadline.exceeded())
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]

"""Coroutines waiting for their catalog job to change, woken from any thread (the
catalog's change listener runs in one of its own)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Followers:
    def __init__(self) -> None:
        # Touched only in the event loop: `following` runs there, wake-ups are sent there.
        self._waiting: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def following(self, job_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever job `job_id` changes (or may have: after a gap)."""
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiting.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(job_id, None)

    def changed(self, job_id: int) -> None:
        self._send(job_id)

    def everyone(self) -> None:
        self._send(None)

    def _send(self, job_id: int | None) -> None:
        if self._loop is None:
            return  # nobody has followed yet
        with contextlib.suppress(RuntimeError):  # the loop is closed: the operator exits
            self._loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: int | None) -> None:
        if job_id is None:
            woken = [event for events in self._waiting.values() for event in events]
        else:
            woken = list(self._waiting.get(job_id, ()))
        for event in woken:
            event.set()

"""Daemons that look at a resource when told something changed: a registry of the events
they wait on, set from any thread (the catalog's change listener runs in one of its own)
or from Kopf's event handlers, and the loop they run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

# A resource is looked at unprompted at least this often: what falls due is known, and
# wake-ups are not lost, but a bug should not make one wait forever.
RESYNC_SECONDS = 300.0


def seconds_until(moment: datetime) -> float:
    """How long to sleep until `moment` (soon if it has passed, RESYNC_SECONDS at most)."""
    return min(max((moment - datetime.now(UTC)).total_seconds(), 0.05), RESYNC_SECONDS)


class Look(NamedTuple):
    written: Any  # the resource as its status write left it; None: nothing was written
    again: float | None  # seconds until it must look again unprompted; None: never


async def looking(
    body: Mapping[str, Any], changed: asyncio.Event, look: Callable[[Mapping[str, Any]], Look]
) -> None:
    """Run `look` (in a thread) on the freshest resource known, again when `changed` is
    set or the seconds it answered have passed, until it answers None."""
    written: tuple[str, Any] | None = None  # (resourceVersion patched, resource after)
    while True:
        changed.clear()
        # Until the watch brings our own last write, the resource as it answered is the
        # fresher one (a transition seen twice would be announced twice).
        stale = written is not None and body["metadata"]["resourceVersion"] == written[0]
        current = written[1] if written is not None and stale else body
        before = current["metadata"]["resourceVersion"]
        result = await asyncio.to_thread(look, current)
        if result.written is not None:
            written = (before, result.written)
        if result.again is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=result.again)


class Followers:
    def __init__(self) -> None:
        # Touched only in the event loop: `following` runs there, wake-ups are sent there.
        self._waiting: dict[Hashable, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def following(self, key: Hashable) -> Iterator[asyncio.Event]:
        """An event set whenever what `key` names changes (or may have: after a gap)."""
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiting.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(key, set())
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(key, None)

    def changed(self, key: Hashable) -> None:
        self._send(key)

    def everyone(self) -> None:
        self._send(None)

    def _send(self, key: Hashable | None) -> None:
        if self._loop is None:
            return  # nobody has followed yet
        with contextlib.suppress(RuntimeError):  # the loop is closed: the operator exits
            self._loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: Hashable | None) -> None:
        if key is None:
            woken = [event for events in self._waiting.values() for event in events]
        else:
            woken = list(self._waiting.get(key, ()))
        for event in woken:
            event.set()

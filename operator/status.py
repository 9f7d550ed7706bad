"""Writing a resource's status: one guarded patch for fields and conditions together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf


def patch_status(
    patch: kopf.Patch, new: Mapping[str, Any], *, unless_already: Mapping[str, Any] | None = None
) -> None:
    """Set these status fields (None removes one) in one JSON patch on the freshest body,
    guarded by its resourceVersion: readers never see a phase without its conditions,
    and conditions merge by type, so a timer and a change handler, each owning some,
    never drop each other's (a whole list from a stale body would). Nothing is written
    when `unless_already` (the status as the handler saw it) already says all of it."""
    if unless_already is not None and _says(unless_already, new):
        return
    fields = dict(new)
    conditions = list(fields.pop("conditions", None) or [])
    patch.fns.append(lambda body: _set_status(body, fields, conditions))


def _set_status(
    body: kopf.RawBody, fields: dict[str, Any], conditions: list[dict[str, Any]]
) -> None:
    status = body.setdefault("status", {})
    for key, value in fields.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    current = status.setdefault("conditions", []) if conditions else []
    for new in conditions:
        index = next((i for i, c in enumerate(current) if c.get("type") == new["type"]), None)
        if index is None:
            current.append(new)
            continue
        if current[index].get("status") == new["status"]:  # no transition: its time stays
            since = current[index].get("lastTransitionTime") or new["lastTransitionTime"]
            new = {**new, "lastTransitionTime": since}
        current[index] = new


def _says(status: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Every field, and every condition's status, reason and message, is already so."""
    compared = ("status", "reason", "message")
    before = {c.get("type"): c for c in status.get("conditions") or []}
    return all(status.get(k) == v for k, v in new.items() if k != "conditions") and all(
        [before.get(c["type"], {}).get(k) for k in compared] == [c[k] for k in compared]
        for c in new.get("conditions") or []
    )

"""Writing a resource's status: one guarded patch for fields and conditions together."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from .resources import GROUP, VERSION

WRITE_ATTEMPTS = 5


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
    body: kopf.RawBody | dict[str, Any], fields: dict[str, Any], conditions: list[dict[str, Any]]
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


def write_status(
    custom: Any,
    plural: str,
    body: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    unless_already: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """What `patch_status` does, sent now, for a daemon (Kopf applies a daemon's patch only
    when it returns): a JSON patch guarded by a test that status is still what it was in
    `body` (other changes, to annotations say, do not refuse it), tried once more on the
    resource read afresh while status changed meanwhile (a daemon's write that is lost
    would have it act again: a retention run, say). Answers the resource as written
    (None: nothing was)."""
    if unless_already is not None and _says(unless_already, new):
        return None
    fields = dict(new)
    conditions = list(fields.pop("conditions", None) or [])
    meta = body["metadata"]
    where = (GROUP, VERSION, meta["namespace"], plural, meta["name"])
    current: Mapping[str, Any] = body
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        fresh = copy.deepcopy(dict(current))
        _set_status(fresh, fields, conditions)
        # (a first status has no earlier one to test: the whole resource is guarded)
        guard = (
            {"op": "test", "path": "/status", "value": current["status"]}
            if "status" in current
            else {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": current["metadata"]["resourceVersion"],
            }
        )
        change = [guard, {"op": "add", "path": "/status", "value": fresh["status"]}]
        try:
            written: dict[str, Any] = custom.patch_namespaced_custom_object_status(
                *where, change, _content_type="application/json-patch+json"
            )
            return written
        except kubernetes.client.ApiException as error:
            if error.status != 422 or attempt == WRITE_ATTEMPTS:  # 422: the test failed
                raise
            current = custom.get_namespaced_custom_object(*where)
    return None

"""A Kubernetes API server for tests: kmock's emulator, made to behave like the real one
where the operator and kubectl notice. (A mock only because no real API server can run
on these machines.)

What it adds to kmock's emulator: `uid`, `resourceVersion`, `generation` (bumped on spec
changes only) and `creationTimestamp`; the status subresource (the main resource ignores
`status`, `/status` changes nothing else); `kind`/`apiVersion` on lists, for kubectl;
and discovery of the project's CRDs as the real server would serve them.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import enums, parsing, rendering
from kmock._internal.k8s import KubernetesError

ROOT = Path(__file__).resolve().parents[1]

_parse_path = parsing.parse_path


def _parse_namespaces_too(path: str) -> parsing.ParsedPath:
    """kmock 0.8 fails on `/api/v1/namespaces` (it reads "namespaces" as the start of a
    namespaced path); the namespaces resource itself is parsed here."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _parse_path(path)


parsing.parse_path = _parse_namespaces_too

BUILTIN = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/persistentvolumeclaims": {"kind": "PersistentVolumeClaim", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "subresources": {"status"}},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
    },
    "coordination.k8s.io/v1/leases": {"kind": "Lease", "namespaced": True},
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def crds() -> list[dict[str, Any]]:
    return [
        crd
        for path in sorted((ROOT / "crds").glob("*.yaml"))
        for crd in yaml.safe_load_all(path.read_text())
    ]


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _kinds: dict[Any, tuple[str, str]] = attrs.field(factory=dict, init=False)
    _with_status: set[Any] = attrs.field(factory=set, init=False)

    def declare(self, key: str, kind: str, *, namespaced: bool, **info: Any) -> None:
        self.resources[key] = {"kind": kind, "namespaced": namespaced, "verbs": VERBS, **info}
        resource = kmock.resource(key)
        group_version = f"{resource.group}/{resource.version}".lstrip("/")
        self._kinds[resource] = (kind, group_version)
        if "status" in info.get("subresources", ()):
            self._with_status.add(resource)

    def declare_all(self) -> None:
        for key, info in BUILTIN.items():
            self.declare(key, **info)
        for crd in crds():
            names, group = crd["spec"]["names"], crd["spec"]["group"]
            for version in crd["spec"]["versions"]:
                self.declare(
                    f"{group}/{version['name']}/{names['plural']}",
                    names["kind"],
                    namespaced=crd["spec"]["scope"] == "Namespaced",
                    singular=names["singular"],
                    shortnames=set(names.get("shortNames", ())),
                    categories=set(names.get("categories", ())),
                    subresources=set(version.get("subresources", {})),
                )

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock keeps every request for assertions and matches each new one by scanning
        # them all: quadratic over a long run. Only the recent ones (those in flight) can
        # still be matching.
        del self._requests[:-32]
        if request.resource is not None and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            # In place: the filters of kmock's reactions know the request by identity.
            object.__setattr__(request, "data", self._stamped(request))
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchException as error:
            # A JSON patch whose "test" failed (the object changed meanwhile): the real
            # server answers 422, and clients such as Kopf re-read and try again.
            raise KubernetesError(status=422, reason="Invalid", message=str(error)) from None

    def _stamped(self, request: rendering.Request) -> Any:
        data = copy.deepcopy(request.data) if isinstance(request.data, dict) else request.data
        if not isinstance(data, dict):
            return data
        meta = data.setdefault("metadata", {})
        has_status = request.resource in self._with_status
        if request.action == enums.action.CREATE:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=_now(),
                namespace=request.namespace or meta.get("namespace"),
            )
            if meta["namespace"] is None:
                del meta["namespace"]
            if has_status:
                data.pop("status", None)
        else:
            for immutable in ("uid", "generation", "creationTimestamp", "deletionTimestamp"):
                meta.pop(immutable, None)
            current = self._current(request)
            if request.subresource == "status":
                data = {"metadata": meta, "status": data.get("status")}
            else:
                if has_status:
                    data.pop("status", None)
                if current is not None and "spec" in data:
                    merged = kmock.Object(current)
                    merged.patch({"spec": data["spec"]})
                    if merged.get("spec") != current.get("spec"):
                        meta["generation"] = current["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = str(next(self._versions))
        return data

    def _current(self, request: rendering.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    async def _serve_version(self, request: rendering.Request) -> Any:
        listing = await super()._serve_version(request)
        for entry in listing["resources"]:
            if "/" in entry["name"]:  # subresources have no short names or categories
                entry.update(shortNames=[], categories=[], singularName="", verbs=["get", "patch"])
        return listing

    async def _serve_list(self, request: rendering.Request) -> Any:
        listing = await super()._serve_list(request)
        kind, group_version = self._kinds.get(request.resource, ("", "v1"))
        listing["metadata"]["resourceVersion"] = str(next(self._versions))
        return {"kind": f"{kind}List", "apiVersion": group_version, **listing}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunningApiServer:
    """The emulator on a loopback port, served from a thread of its own."""

    def __init__(self, server: ApiServer, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.url = url
        self.loop = loop

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "not-checked"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {
                                "cluster": "emulator",
                                "user": "tester",
                                "namespace": "default",
                            },
                        }
                    ],
                    "current-context": "emulator",
                }
            )
        )
        return path

    def objects(self, key: str, namespace: str | None = "default") -> dict[str, dict[str, Any]]:
        """The live objects of a resource, by name (a snapshot)."""

        async def snapshot() -> dict[str, dict[str, Any]]:
            resource = kmock.resource(key)
            return {
                name: copy.deepcopy(obj.raw)
                for (res, ns, name), obj in self.server.objects.items()
                if res == resource and ns == namespace and not obj.deleted
            }

        return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result(10)

    def phases(self, key: str, namespace: str | None = "default") -> dict[str, str | None]:
        """`status.phase` of each live object of a resource: a cheap poll for benchmarks."""

        async def snapshot() -> dict[str, str | None]:
            resource = kmock.resource(key)
            return {
                name: (obj.raw.get("status") or {}).get("phase")
                for (res, ns, name), obj in self.server.objects.items()
                if res == resource and ns == namespace and not obj.deleted
            }

        return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result(10)


@contextmanager
def api_server() -> Iterator[RunningApiServer]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with ApiServer() as server, kmock.Server(server) as http:
            server.declare_all()
            server.objects["v1/namespaces", None, "default"] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "default", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            }
            ready["running"] = RunningApiServer(server, str(http.url).rstrip("/"), loop)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(20):
        raise RuntimeError("the API server emulator did not start")
    try:
        yield ready["running"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)

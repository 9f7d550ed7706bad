"""A stand-in kubelet for the test control plane (no kubelet or container runtime can run
on these machines). It registers a Node, binds the pods no scheduler binds, runs each
pod's container as a local process of this project's own command (its env resolved from
the real Secrets and ConfigMaps it names, its volumes mapped to local folders), and
writes the pod's status, so that the real Job controller decides Complete or Failed.

What it does not do: pull or run images (every container runs `backup-operator`, the
image's entrypoint, from this checkout), isolate processes, enforce resources or
security contexts, or run probes. Containers of other images fail at once, saying so.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apiserver import ROOT, Cluster, url_of

NODE = "test-kubelet"
PROJECT_IMAGE = "minio-backup-operator"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    def __init__(self, cluster: Cluster, folder: Path) -> None:
        self.cluster = cluster
        self.folder = folder
        self.claims: dict[tuple[str, str], Path] = {}  # (namespace, claim) -> folder
        self.extra_env: dict[str, str] = {}
        self.processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.logs: dict[tuple[str, str], Path] = {}
        self.refused: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)

    # -- for tests ---------------------------------------------------------------
    def provide_claim(self, namespace: str, claim: str, folder: Path) -> None:
        """Back a PersistentVolumeClaim (which the test also creates) by a local folder."""
        self.claims[namespace, claim] = folder

    def running(self, namespace: str) -> dict[str, subprocess.Popen[bytes]]:
        return {
            name: p
            for (ns, name), p in list(self.processes.items())
            if ns == namespace and p.poll() is None
        }

    def log_of(self, namespace: str, pod: str) -> str:
        path = self.logs.get((namespace, pod))
        return path.read_text(errors="replace") if path and path.exists() else ""

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Kubelet:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        if self.cluster.get("v1/nodes", NODE) is None:
            self.cluster.create("v1/nodes", node)
        self.cluster.request(
            "PATCH",
            url_of("v1/nodes", None, NODE) + "/status",
            json={
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "lastHeartbeatTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ],
                    "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                    "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)
        for process in self.processes.values():
            if process.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as error:  # the control plane stopping, mostly
                print(f"kubelet: {type(error).__name__}: {error}", file=sys.stderr)
            self._stop.wait(0.2)

    # -- one pass ----------------------------------------------------------------
    def _sync(self) -> None:
        response = self.cluster.request("GET", "/api/v1/pods")
        response.raise_for_status()
        for pod in response.json()["items"]:
            meta, spec = pod["metadata"], pod["spec"]
            key = (meta["namespace"], meta["name"])
            if meta.get("deletionTimestamp"):
                self._delete(pod, key)
            elif not spec.get("nodeName"):
                self._bind(meta)
            elif spec["nodeName"] != NODE or key in self.refused:
                continue
            elif key not in self.processes and pod["status"].get("phase", "Pending") == "Pending":
                self._launch(pod, key)
            elif key in self.processes:
                self._report_exit(pod, key)

    def _bind(self, meta: dict[str, Any]) -> None:
        self.cluster.request(
            "POST",
            url_of("v1/pods", meta["namespace"], meta["name"]) + "/binding",
            json={
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            },
        )

    def _launch(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        (container,) = pod["spec"]["containers"]
        if PROJECT_IMAGE not in container["image"]:
            self._set_status(
                pod,
                "Failed",
                exit_code=127,
                reason="UnsupportedImage",
                message=f"the test kubelet runs only {PROJECT_IMAGE} images",
            )
            self.refused.add(key)
            return
        try:
            env = self._env(pod, container)
        except LookupError as error:  # a Secret not there yet: kubelets wait, so do we
            self._set_waiting(pod, "CreateContainerConfigError", str(error))
            return
        args = [self._mapped(pod, container, arg) for arg in container.get("args") or []]
        log = self.folder / f"{key[0]}-{key[1]}.log"
        self.logs[key] = log
        self.processes[key] = subprocess.Popen(
            [sys.executable, "-m", "backup_operator", *args],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.folder,
        )
        self._set_status(pod, "Running")

    def _report_exit(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        process = self.processes[key]
        code = process.poll()
        if code is None or pod["status"].get("phase") in ("Succeeded", "Failed"):
            return
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        self._set_status(pod, "Succeeded" if code == 0 else "Failed", exit_code=exit_code)

    def _delete(self, pod: dict[str, Any], key: tuple[str, str]) -> None:
        process = self.processes.get(key)
        if process is not None and process.poll() is None:
            grace = pod["metadata"].get("deletionGracePeriodSeconds") or 30
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(min(grace, 10))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if process is not None:
            self._report_exit(pod, key)
        self.cluster.request(
            "DELETE",
            url_of("v1/pods", *key),
            json={"gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}},
        )

    # -- what a container sees ---------------------------------------------------
    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "HOME": str(self.folder),
            **self.extra_env,
        }
        for source in container.get("envFrom") or []:
            kind = "secretRef" if "secretRef" in source else "configMapRef"
            env.update(self._data(namespace, kind, source[kind]["name"]))
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item.get("valueFrom") or {}
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "secretKeyRef" if "secretKeyRef" in ref else "configMapKeyRef"
                data = self._data(namespace, kind, ref[kind]["name"])
                if ref[kind]["key"] not in data:
                    if ref[kind].get("optional"):
                        continue
                    raise LookupError(f"{ref[kind]['name']} has no key {ref[kind]['key']}")
                env[item["name"]] = data[ref[kind]["key"]]
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                env[item["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": namespace,
                    "spec.nodeName": NODE,
                    "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                }.get(path, "")
        return env

    def _data(self, namespace: str, kind: str, name: str) -> dict[str, str]:
        secret = kind.startswith("secret")
        found = self.cluster.get("v1/secrets" if secret else "v1/configmaps", name, namespace)
        if found is None:
            raise LookupError(f"{'secret' if secret else 'configmap'} {name!r} not found")
        data = found.get("data") or {}
        if secret:
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    def _mapped(self, pod: dict[str, Any], container: dict[str, Any], arg: str) -> str:
        """A path under one of the container's mounts, as the local folder behind it."""
        for mount in container.get("volumeMounts") or []:
            path = mount["mountPath"]
            if arg == path or arg.startswith(path.rstrip("/") + "/"):
                local = self._volume(pod, mount)
                return str(local) + arg[len(path) :]
        return arg

    def _volume(self, pod: dict[str, Any], mount: dict[str, Any]) -> Path:
        namespace = pod["metadata"]["namespace"]
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            base = self.claims.get((namespace, claim))
            if base is None:
                raise LookupError(f"no folder backs claim {namespace}/{claim}")
        else:
            base = Path(tempfile.mkdtemp(dir=self.folder, prefix=mount["name"]))
        return base / mount.get("subPath", "")

    # -- status ------------------------------------------------------------------
    def _set_waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        state = {"waiting": {"reason": reason, "message": message}}
        self._patch_status(
            pod, {"phase": "Pending", "containerStatuses": [self._container(pod, state, False)]}
        )

    def _set_status(
        self,
        pod: dict[str, Any],
        phase: str,
        *,
        exit_code: int | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        if exit_code is None:
            state: dict[str, Any] = {"running": {"startedAt": _now()}}
        else:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                    "finishedAt": _now(),
                    **({"message": message} if message else {}),
                }
            }
        ready = "True" if phase == "Running" else "False"
        self._patch_status(
            pod,
            {
                "phase": phase,
                "startTime": pod["status"].get("startTime") or _now(),
                "conditions": [
                    {
                        "type": t,
                        "status": ready if t in ("Ready", "ContainersReady") else "True",
                        "lastTransitionTime": _now(),
                    }
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [self._container(pod, state, phase == "Running")],
            },
        )

    @staticmethod
    def _container(pod: dict[str, Any], state: dict[str, Any], ready: bool) -> dict[str, Any]:
        container = pod["spec"]["containers"][0]
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": "running" in state,
            "state": state,
        }

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.cluster.request(
            "PATCH",
            url_of("v1/pods", meta["namespace"], meta["name"]) + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )

"""The real Kopf operator (`backup-operator operator`, a process of its own) against the
real kube-apiserver (tests/apiserver.py), with real PostgreSQL and S3; kubectl, of the
server's own release, as the user's client.

The operator runs as the chart's ServiceAccount: the chart's RBAC is rendered by Helm's
engine and applied, and the operator is given a TokenRequest token of that account, so
every call it makes is authorized as it would be in a cluster. A test fails when the
operator's log shows a request the server refused as forbidden.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from apiserver import ROOT, Cluster, secret_data
from kubelet import Kubelet

JOBS = "minio-backup.dev/v1alpha1/backupjobs"
POLICIES = "minio-backup.dev/v1alpha1/retentionpolicies"
SCHEDULES = "minio-backup.dev/v1alpha1/backupschedules"
CHART = ROOT / "charts" / "minio-backup-operator"
# The chart's required values; only its RBAC (and, in the Helm test, the rest) is used.
CHART_VALUES = {
    "database": {"url": "postgresql://unused@127.0.0.1:1/unused"},
    "objectStore": {"endpoint": "127.0.0.1:1", "accessKey": "unused", "secretKey": "unused"},
}
RBAC_KINDS = {
    "ServiceAccount": "v1/serviceaccounts",
    "Role": "rbac.authorization.k8s.io/v1/roles",
    "RoleBinding": "rbac.authorization.k8s.io/v1/rolebindings",
    "ClusterRole": "rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1/clusterrolebindings",
}


class KubeNamespace:
    """The cluster as one test sees it: its own namespace, the admin's view of it, and
    the identities the chart would give the operator there."""

    def __init__(self, cluster: Cluster, kubelet: Kubelet, name: str, folder: Path) -> None:
        self.cluster = cluster
        self.kubelet = kubelet
        self.name = name
        self.folder = folder

    def objects(self, key: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        return self.cluster.objects(key, namespace or self.name)

    def phases(self, key: str) -> dict[str, str | None]:
        return self.cluster.phases(key, self.name)

    def get(self, key: str, name: str) -> dict[str, Any] | None:
        return self.cluster.get(key, name, self.name)

    def user_kubeconfig(self) -> Path:
        """The user's: an administrator whose kubectl works in this namespace."""
        return self.cluster.kubeconfig(self.folder / "user.kubeconfig", namespace=self.name)

    def operator_kubeconfig(self, *, cluster_wide: bool = False, release: str = "backups") -> Path:
        """The chart's ServiceAccount and RBAC (namespaced: a Role in this namespace; or
        cluster-wide), applied; a kubeconfig with a token of that account."""
        values = {**CHART_VALUES, "watch": {"clusterWide": cluster_wide}}
        for doc in render_chart(values, release, self.name):
            if doc["kind"] in RBAC_KINDS:
                key = RBAC_KINDS[doc["kind"]]
                scoped = None if doc["kind"].startswith("Cluster") else self.name
                if doc["kind"].startswith("Cluster"):
                    # Unique per test: cluster-wide objects outlive the namespace.
                    doc["metadata"]["name"] = f"{doc['metadata']['name']}-{self.name}"
                    if doc["kind"] == "ClusterRoleBinding":
                        doc["roleRef"]["name"] = doc["metadata"]["name"]
                existing = self.cluster.get(key, doc["metadata"]["name"], scoped)
                if existing is None:
                    self.cluster.create(key, doc, scoped)
        account = f"{release}-minio-backup-operator"
        token = self.cluster.token_for(self.name, account)
        suffix = "cluster" if cluster_wide else "namespaced"
        return self.cluster.kubeconfig(
            self.folder / f"operator-{suffix}.kubeconfig", token=token, namespace=self.name
        )

    def secret(self, name: str, values: dict[str, str]) -> None:
        self.cluster.create(
            "v1/secrets", {"metadata": {"name": name}, "data": secret_data(values)}, self.name
        )


def render_chart(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def forbidden_requests(log: str) -> list[str]:
    """Lines of an operator log telling of a request the API server refused (403)."""
    return [line for line in log.splitlines() if "403" in line and "orbidden" in line]


class Operator:
    def __init__(self, api: KubeNamespace, env: dict[str, str], log: Path) -> None:
        self.api = api
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.user_kubeconfig = api.user_kubeconfig()

    @property
    def namespace(self) -> str:
        return self.api.name

    def start(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backup_operator", "operator", *(options or ["--standalone"])],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(60)
        finally:
            self.process = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = self.api.cluster.kubectl(*args, kubeconfig=self.user_kubeconfig, input=input)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done.stdout + done.stderr

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def get(self, key: str, name: str) -> dict[str, Any] | None:
        return self.api.get(key, name)

    def eventually(self, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll `check` until it answers something truthy, and answer that; fail saying
        `what` did not happen, with the operator's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := check():
                return found
            time.sleep(0.1)
        raise AssertionError(f"{what} (waited {timeout}s)\n{self.logs()[-4000:]}")

    def wait_for(
        self,
        key: str,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 60,
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            obj = self.get(key, name)
            return obj if obj is not None and predicate(obj) else None

        found: dict[str, Any] = self.eventually(
            reached, f"{key} {name} did not get there; last: {self.get(key, name)}", timeout
        )
        return found

    def wait_gone(self, key: str, name: str, timeout: float = 30) -> None:
        self.eventually(
            lambda: self.get(key, name) is None,
            f"{name} was not released by its finalizer",
            timeout,
        )

    def wait_for_event(self, name: str, reason: str, timeout: float = 20) -> dict[str, Any]:
        def posted() -> dict[str, Any] | None:
            events = self.api.objects("v1/events").values()
            return next(
                (e for e in events if (e["involvedObject"]["name"], e["reason"]) == (name, reason)),
                None,
            )

        found: dict[str, Any] = self.eventually(posted, f"no {reason} event for {name}", timeout)
        return found


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return loaded


def path_job(name: str, source: Path, bucket: str, **spec: Any) -> dict[str, Any]:
    """A BackupJob of a directory the operator's pod has mounted."""
    manifest = example("backupjob-path.yaml")
    manifest["metadata"] = {"name": name}
    manifest["spec"] = {"source": {"path": str(source)}, "bucket": bucket, "keyPrefix": "k"}
    manifest["spec"].update(spec)
    return manifest


@contextmanager
def operator(
    api: KubeNamespace,
    tmp_path: Path,
    database_url: str,
    s3: tuple[str, str, str],
    *,
    cluster_wide: bool = False,
    **settings: str,
) -> Iterator[Operator]:
    """The operator process, as the chart's ServiceAccount, watching the test's namespace
    (or, cluster-wide, all of them); `settings` add to or override its environment."""
    endpoint, access, secret = s3
    env = {
        **os.environ,
        "KUBECONFIG": str(api.operator_kubeconfig(cluster_wide=cluster_wide)),
        "SQLALCHEMY_DATABASE_URL": database_url,
        "MINIO_ENDPOINT": endpoint,
        "MINIO_ACCESS_KEY": access,
        "MINIO_SECRET_KEY": secret,
        "MINIO_SECURE": "false",
        "WATCH_NAMESPACES": "" if cluster_wide else api.name,
        "OPERATOR_POLL_SECONDS": "0.3",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "METRICS_PORT": "0",  # several operators run at once: a test asks for it
        "PYTHONPATH": str(ROOT),
        "SOURCE_ROOTS": str(tmp_path.parent),  # the test's own directories
        **settings,
    }
    running = Operator(api, env, tmp_path / "operator.log")
    running.start(*(["--standalone", "--all-namespaces"] if cluster_wide else []))
    try:
        yield running
    finally:
        if running.process is not None:
            running.stop()
    refused = forbidden_requests(running.logs())
    assert not refused, "the operator was refused by RBAC:\n" + "\n".join(refused[:10])

"""The chart's RBAC on the real API server: what the operator's ServiceAccount may and may
not do (namespaced and cluster-wide), the operator working with exactly that (the harness
fails any test whose operator log shows a 403), and its status patches under real
optimistic concurrency."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from apiserver import url_of
from conftest import write
from operator_harness import JOBS, KubeNamespace, Operator, operator, path_job, phase

ACCOUNT = "backups-minio-backup-operator"


def can_i(
    api: KubeNamespace,
    verb: str,
    resource: str,
    namespace: str | None = None,
    *,
    who: str | None = None,
) -> bool:
    who = who or f"system:serviceaccount:{api.name}:{ACCOUNT}"
    scope = ["--all-namespaces"] if namespace == "*" else ["-n", namespace or api.name]
    # (kubectl reads "kind/x" as the object named x: a subresource is a flag of its own)
    kind, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    done = api.cluster.kubectl("auth", "can-i", verb, kind, *extra, f"--as={who}", *scope)
    return done.stdout.strip() == "yes"


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced", "cluster-wide"])
def test_the_operator_account_gets_exactly_what_the_chart_grants(
    api: KubeNamespace, cluster_wide: bool
) -> None:
    api.operator_kubeconfig(cluster_wide=cluster_wide)
    other = "*" if cluster_wide else "kube-system"
    for verb, resource in [
        ("watch", "backupjobs.minio-backup.dev"),
        ("patch", "backupjobs.minio-backup.dev/status"),
        ("create", "backupjobs.minio-backup.dev"),
        ("list", "retentionpolicies.minio-backup.dev"),
        ("create", "jobs.batch"),
        ("get", "jobs.batch"),
        ("create", "events"),
        ("create", "secrets"),
    ]:
        assert can_i(api, verb, resource), (verb, resource)
        assert can_i(api, verb, resource, other) is cluster_wide, (verb, resource, other)
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("patch", "secrets"),  # (a patch answers the Secret: a way to read it)
        ("get", "configmaps"),
        ("create", "pods"),
        ("delete", "jobs.batch"),
        ("update", "backupjobs.minio-backup.dev"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("*", "*"),
    ]:
        assert not can_i(api, verb, resource), (verb, resource)
        assert not can_i(api, verb, resource, other), (verb, resource, other)
    # Only cluster-wide does Kopf follow namespaces and CRDs (and it is granted that).
    assert can_i(api, "list", "namespaces", other) is cluster_wide
    assert can_i(api, "watch", "customresourcedefinitions.apiextensions.k8s.io") is cluster_wide


def test_a_cluster_wide_operator_backs_up_with_its_cluster_role_alone(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    with operator(api, tmp_path, db_url, s3_endpoint, cluster_wide=True) as op:
        op.apply(path_job("everywhere", tmp_path / "src", bucket_name))
        done = op.wait_for(JOBS, "everywhere", lambda o: phase(o) == "Completed")
        assert done["status"]["files"] == 1
        op.wait_for_event("everywhere", "Completed")


def test_status_patches_that_lose_a_race_are_reapplied_and_keep_every_condition(
    op: Operator, tmp_path: Path, bucket_name: str
) -> None:
    # Another writer changes the resource all the time while the operator updates its
    # status: annotations, and a condition of its own in status (as another controller
    # would, with a guarded PUT). The server refuses the operator's guarded JSON patches
    # whose status changed under them (422, a failed `test` op), and they are re-applied
    # to the fresher body. Nothing may be lost: neither the other writer's annotation and
    # condition, nor the condition the change handler adds while the job's follower
    # writes progress.
    source = tmp_path / "src"
    # (6,000: with 2,000 the faster engine once ended before any patch lost a race)
    for i in range(6000):
        write(source, f"d{i % 60}/f{i}.bin", f"{i}".encode() * 500)
    name = "raced"
    # One object per file (no packs) keeps the job running for a while; the writer goes
    # straight to the API (not through kubectl) so that it writes many times meanwhile.
    job = path_job(name, source, bucket_name, packThreshold=0)
    refused = {"verb": "PATCH", "resource": "backupjobs", "subresource": "status", "code": "422"}
    before = op.api.cluster.metric("apiserver_request_total", **refused)
    op.apply(job)
    stop = threading.Event()
    writes: list[int] = []
    checks: list[str] = []

    def race() -> None:
        url = url_of(JOBS, op.namespace, name)
        while not stop.is_set():
            writes.append(len(writes))
            annotation = {"metadata": {"annotations": {"test/write": str(len(writes))}}}
            response = op.api.cluster.request(
                "PATCH",
                url,
                content=json.dumps(annotation),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            response.raise_for_status()
            current = op.api.cluster.request("GET", url).json()
            conditions = [
                c for c in current["status"]["conditions"] if c["type"] != "ExternalCheck"
            ]
            check = f"check {len(writes)}"
            conditions.append(
                {
                    "type": "ExternalCheck",
                    "status": "True",
                    "reason": "Checked",
                    "message": check,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            )
            current["status"]["conditions"] = conditions
            put = op.api.cluster.request("PUT", url + "/status", json=current)
            if put.status_code == 200:
                checks.append(check)
            elif put.status_code != 409:  # 409: the operator wrote first; next round
                put.raise_for_status()

    racer = threading.Thread(target=race)
    op.wait_for(JOBS, name, lambda o: phase(o) == "Running")
    racer.start()
    try:
        op.kubectl(
            "patch", "bj", name, "--type=merge", "-p", json.dumps({"spec": {"rehash": True}})
        )
        # The change handler and the job's follower write status independently: the
        # job may complete before the refusal is written, never without it.
        op.wait_for(JOBS, name, lambda o: phase(o) == "Completed", timeout=120)
        op.wait_for(JOBS, name, lambda o: "SpecRejected" in _types(o), timeout=30)
    finally:
        stop.set()
        racer.join()
    done = op.wait_for(JOBS, name, lambda o: True)
    conditions = {c["type"]: c for c in done["status"]["conditions"]}
    assert phase(done) == "Completed"
    assert conditions["SpecRejected"]["status"] == "True"
    assert "spec.rehash" in conditions["SpecRejected"]["message"]
    assert (conditions["Ready"]["status"], conditions["Failed"]["status"]) == ("True", "False")
    assert done["status"]["files"] == 6000
    assert done["metadata"]["annotations"]["test/write"] == str(len(writes))
    assert checks and conditions["ExternalCheck"]["message"] == checks[-1]
    assert op.api.cluster.metric("apiserver_request_total", **refused) > before, (
        f"no status patch lost a race in {len(writes)} concurrent writes"
    )


def _types(resource: dict[str, Any]) -> set[str]:
    return {c["type"] for c in (resource.get("status") or {}).get("conditions") or []}


def test_a_namespaces_people_manage_their_own_backups_and_nothing_of_another_namespace(
    api: KubeNamespace,
) -> None:
    api.operator_kubeconfig()  # the chart's RBAC, its tenant ClusterRoles included
    other = api.cluster.new_namespace("other")
    api.cluster.create("v1/serviceaccounts", {"metadata": {"name": "ci"}}, api.name)
    for subject, role in [
        ({"kind": "ServiceAccount", "name": "ci", "namespace": api.name}, "edit"),
        ({"kind": "User", "name": "auditor", "apiGroup": "rbac.authorization.k8s.io"}, "view"),
    ]:
        binding = {
            "metadata": {"name": f"backups-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"{ACCOUNT}-{role}-{api.name}",  # (the harness's per-test name)
            },
            "subjects": [subject],
        }
        api.cluster.create("rbac.authorization.k8s.io/v1/rolebindings", binding, api.name)
    ci, auditor = f"system:serviceaccount:{api.name}:ci", "auditor"
    kinds = ["backupjobs", "backupschedules", "retentionpolicies"]
    for kind in (f"{k}.minio-backup.dev" for k in kinds):
        for verb in ("create", "patch", "delete", "list", "watch"):
            assert can_i(api, verb, kind, who=ci), (verb, kind)
            assert not can_i(api, verb, kind, other, who=ci), (verb, kind, other)
        assert not can_i(api, "patch", f"{kind}/status", who=ci)  # status is the operator's
        assert can_i(api, "list", kind, who=auditor)
        assert not can_i(api, "create", kind, who=auditor)
        assert not can_i(api, "list", kind, other, who=auditor)
    for verb, resource in [("get", "secrets"), ("create", "jobs.batch"), ("create", "pods")]:
        assert not can_i(api, verb, resource, who=ci), (verb, resource)
    # Kubernetes' own `edit` role includes it (aggregation): a namespace's editors need
    # no extra binding.
    editor = {"kind": "User", "name": "editor", "apiGroup": "rbac.authorization.k8s.io"}
    api.cluster.create(
        "rbac.authorization.k8s.io/v1/rolebindings",
        {
            "metadata": {"name": "editors"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [editor],
        },
        api.name,
    )
    deadline = time.monotonic() + 30  # the aggregation controller updates `edit` shortly
    while not can_i(api, "create", "backupjobs.minio-backup.dev", who="editor"):
        assert time.monotonic() < deadline, "the edit ClusterRole did not aggregate the chart's"
        time.sleep(0.2)
    assert not can_i(api, "patch", "backupjobs.minio-backup.dev/status", who="editor")
    api.cluster.drop_namespace(other)

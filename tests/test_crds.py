"""The CRDs: structural schemas that accept every example and reject bad specs with
messages naming the field (checked with each CRD's own openAPIV3Schema)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from apiserver import crds
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


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
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
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(name: str, change: Any, field: str) -> None:
    found = errors(_broken(name, change))
    assert any(e.startswith(field) for e in found), found

"""One spec per resource: the CRD files are what the spec generates, the API and the CRD
show the same bounds and defaults, and a field added to the spec reaches both."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from apiserver import ROOT
from fastapi.testclient import TestClient
from pydantic import Field

from backup_operator.errors import Invalid
from backup_operator.specs import crds
from backup_operator.specs.fields import (
    Crd,
    Floor,
    check,
    crd_path,
    crd_properties,
    read_resource,
    structural,
)
from backup_operator.specs.retention_policy import PolicyResource, PolicySpec

CHART_CRDS = ROOT / "charts" / "minio-backup-operator" / "crds"


@pytest.mark.parametrize("name", sorted(crds.GENERATED))
def test_the_crd_files_are_what_the_specs_generate(name: str) -> None:
    expected = crds.render(name)
    for folder in (ROOT / "crds", CHART_CRDS):
        assert (folder / name).read_text() == expected, (
            f"{folder / name} differs from its spec: run `make crd-schemas`"
        )


def _crd_spec_properties() -> dict[str, Any]:
    (version,) = crds.retention_policies()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def _at(properties: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    for parent in parents:
        properties = properties[parent]["properties"]
    return properties[leaf]


CHECKED = ("minimum", "maximum", "pattern", "maxLength", "enum", "default")


def _bound(schema: dict[str, Any], key: str) -> Any:
    value = schema.get(key)
    # OpenAPI's JSON writes the int64 limits as floats; a Kubernetes integer is int64.
    return None if key in ("minimum", "maximum") and abs(value or 0) >= 2**63 - 1 else value


def test_the_api_and_the_crd_show_the_same_bounds_and_defaults(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()["components"]["schemas"]
    created = openapi["PolicyCreate"]["properties"]
    crd = _crd_spec_properties()
    api_only = {"description", "keep_last", "max_age_days"}
    written_differently = {"rules", "bucket_id"}  # camelCase rules; the bucket by name
    for name in PolicySpec.model_fields.keys() - api_only - written_differently:
        path = crd_path(PolicySpec, name)
        api_field = structural(created[name], {k: v for k, v in openapi.items()})
        crd_field = _at(crd, path)
        for key in CHECKED:
            assert _bound(api_field, key) == _bound(crd_field, key), (name, path, key)
    assert _at(crd, "minVersions")["minimum"] == 1
    assert _at(crd, "objectLock.days")["maximum"] == 36_500
    assert _at(crd, "target")["default"] == "versions"


def test_the_resource_is_read_by_the_spec_and_errors_name_its_fields() -> None:
    spec = {
        "rules": {"keepDaily": 7, "keepWithinWeekly": "1m"},
        "minVersions": 2,
        "scope": {"bucket": "b", "keyPrefix": "db/", "matchTags": {"env": "prod"}},
        "objectLock": {"mode": "GOVERNANCE", "days": 30},
        "interval": "6h",
    }
    fields = read_resource(PolicySpec, spec)
    assert fields == {
        "rules": {"keep_daily": 7, "keep_within_weekly": "1m"},
        "min_versions": 2,
        "key_prefix": "db/",
        "match_tags": {"env": "prod"},
        "lock_mode": "GOVERNANCE",
        "lock_days": 30,
    }
    assert read_resource(PolicyResource, spec) == {"bucket": "b", "interval": "6h"}
    assert crd_path(PolicySpec, "rules.keep_within_weekly") == "rules.keepWithinWeekly"
    assert crd_path(PolicySpec, "match_tags.some_tag") == "scope.matchTags.some_tag"
    assert crd_path(PolicySpec, "bucket_id") == "scope.bucket"
    with pytest.raises(Invalid) as error:
        check(PolicySpec.model_validate({**fields, "lock_days": 36_501}))
    assert error.value.field == "lock_days" and "100 years" in error.value.message


def test_a_field_added_to_the_spec_reaches_the_crd_the_resource_reader_and_the_checks() -> None:
    class WithNewField(PolicySpec):
        keep_max_gib: Annotated[int | None, Floor(1), Crd("limits.keepMaxGib")] = Field(
            None, description="keep at most this many GiB"
        )

    properties = crd_properties(WithNewField)
    assert properties["limits"]["properties"]["keepMaxGib"] == {
        "type": "integer",
        "minimum": 1,
        "description": "keep at most this many GiB",
    }
    assert read_resource(WithNewField, {"limits": {"keepMaxGib": 5}}) == {"keep_max_gib": 5}
    assert crd_path(WithNewField, "keep_max_gib") == "limits.keepMaxGib"
    with pytest.raises(Invalid) as error:
        check(WithNewField(keep_max_gib=0))
    assert error.value.field == "keep_max_gib"

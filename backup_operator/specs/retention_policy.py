"""A retention policy's spec: every field once. The API's PolicyCreate, PolicyUpdate and
PolicyOut derive from `PolicySpec`; the RetentionPolicy CRD's spec schema is generated
from `PolicySpec` and `PolicyResource` (where each field sits in the resource: `Crd`);
the catalog checks a policy with `check`, the operator reads a resource with `read`."""

from __future__ import annotations

import enum
from dataclasses import fields
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..forget import Policy
from .fields import (
    DURATION_PATTERN,
    Checked,
    Crd,
    DurationText,
    Floor,
    Id,
    Int64,
    JsonSchema,
    MaxLength,
    Pattern,
    Span,
    camel,
    snake,
)

MAX_LOCK_DAYS = 36_500


class RetentionTarget(enum.StrEnum):
    VERSIONS = "versions"  # the version history of each governed object
    JOBS = "jobs"  # the completed jobs of one source (snapshot-style)


class LockMode(enum.StrEnum):
    GOVERNANCE = "GOVERNANCE"
    COMPLIANCE = "COMPLIANCE"


def _forget_rules_schema() -> JsonSchema:
    """The resource's `rules`: restic's forget rules (forget.Policy), camelCase."""
    by_type: dict[str, JsonSchema] = {
        "int": {"type": "integer", "minimum": -1},
        "Duration": {"type": "string", "pattern": DURATION_PATTERN},
        "tuple[tuple[str, ...], ...]": {
            "type": "array",
            "items": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        },
        "str": {"type": "string"},
    }
    return {
        "type": "object",
        "properties": {camel(rule.name): by_type[str(rule.type)] for rule in fields(Policy)},
    }


RULES_DESCRIPTION = (
    "restic's forget rules; a point is kept if any rule keeps it (a union), and no rule "
    "at all deletes nothing. keep_last, keep_hourly, keep_daily, keep_weekly, "
    "keep_monthly, keep_yearly count periods that hold points, newest first (-1: "
    "unlimited); keep_within and keep_within_hourly/daily/weekly/monthly/yearly are "
    "durations like 1y2m3d4h back from the newest point; keep_tags is a list of tag "
    "lists; timezone is the IANA zone of the calendar periods (default UTC). The "
    "resource spells them in camelCase (keepLast, keepWithinDaily)."
)


def _rules_by_restic_name(rules: dict[str, Any]) -> dict[str, Any]:
    return {snake(name): value for name, value in rules.items()}


class PolicySpec(BaseModel):
    """What a retention policy says, wherever it comes from (the API or a resource)."""

    description: str = ""
    keep_last: Annotated[
        Int64 | None, Floor(1, "must be at least 1 (omit it to keep no count)")
    ] = Field(None, description="keep the newest N versions of each object")
    max_age_days: Annotated[Int64 | None, Floor(1, "must be at least 1 day")] = Field(
        None, description="keep versions younger than D days"
    )
    rules: Annotated[
        dict[str, Any],
        Checked(Policy.from_dict),  # names the rule: rules.<name>
        Crd("rules", schema=_forget_rules_schema(), read=_rules_by_restic_name, key_name=camel),
    ] = Field(default_factory=dict, description=RULES_DESCRIPTION)
    min_versions: Annotated[
        Int64 | None, Floor(1, "must be at least 1 (omit it for no floor)"), Crd("minVersions")
    ] = Field(None, description="never fewer than N versions of an object, whatever else says")
    max_age: Annotated[str | None, DurationText(), Crd("maxAge")] = Field(
        None,
        description="a cap (1y2m3d4h): older versions are deleted whatever kept them, "
        "but for the newest min_versions",
    )
    target: Annotated[RetentionTarget, Crd("target")] = Field(
        RetentionTarget.VERSIONS,
        description="versions: the version history of each governed object; jobs: the "
        "completed jobs of one source (its bucket and source), snapshot-style",
    )
    bucket_id: Annotated[Id | None, Crd("scope.bucket", shown=False)] = Field(
        None, description="target jobs: the source's bucket; target versions: scope by bucket"
    )
    source_system: Annotated[str | None, Crd("scope.source")] = Field(
        None, description="target jobs: the source whose jobs it forgets (a BackupJob's source)"
    )
    key_prefix: Annotated[str | None, MaxLength(512), Crd("scope.keyPrefix")] = Field(
        None, description="target versions: scope by key prefix"
    )
    match_tags: Annotated[dict[str, str] | None, Crd("scope.matchTags")] = Field(
        None, description="target versions: scope by tags (an object must carry them all)"
    )
    lock_mode: Annotated[LockMode | None, Crd("objectLock.mode")] = Field(
        None,
        description="store new versions under S3 Object Lock in this mode (lock-enabled "
        "buckets), for lock_days",
    )
    lock_days: Annotated[
        Int64 | None,
        Span(1, MAX_LOCK_DAYS, f"must be from 1 to {MAX_LOCK_DAYS} days (100 years)"),
        Crd("objectLock.days"),
    ] = Field(None, description="days of object lock for new versions")
    legal_hold: Annotated[bool, Crd("objectLock.legalHold")] = Field(
        False, description="store new versions under legal hold"
    )
    keep_min_successful: Annotated[
        Int64 | None,
        Floor(1, "must be at least 1 (omit it for no floor)"),
        Crd("keepMinSuccessful"),
    ] = Field(
        None,
        description="target jobs: the newest N successful (completed, not partially failed) "
        "jobs of the source are kept whatever the rules say; default none",
    )
    require_dry_run: Annotated[bool, Crd("requireDryRun")] = Field(
        False,
        description="a real run (apply) is refused until a dry run follows the policy's "
        "last change; a resource's first run after each change is a dry run",
    )


class PolicyResource(BaseModel):
    """What only a RetentionPolicy resource says: its bucket by name, and its schedule."""

    bucket: Annotated[str | None, MaxLength(63), Crd("scope.bucket")] = Field(
        None, description="the bucket (its name) of the source or of the scope"
    )
    interval: Annotated[
        str, Pattern(r"^\d+[smhd]$", "a number and s, m, h or d (30m)"), Crd("interval")
    ] = Field("1h", description="how often it is applied, like 30m, 6h or 1d")
    dry_run: Annotated[bool, Crd("dryRun")] = Field(
        False, description="only evaluate; the status shows what a run would delete"
    )


# The rest of the CRD's spec schema: what it requires, and the rules across fields that
# the API server checks (the catalog checks the same in _check_target and _check_lock).
CRD_SPEC: JsonSchema = {
    "required": ["rules"],
    "x-kubernetes-validations": [
        {
            "rule": "self.target != 'jobs' || (has(self.scope) && has(self.scope.bucket)"
            " && has(self.scope.source))",
            "message": "a jobs policy needs scope.bucket and scope.source",
        },
        {
            "rule": "!has(self.keepMinSuccessful) || self.target == 'jobs'",
            "message": "keepMinSuccessful applies to a jobs policy",
        },
    ],
}
CRD_OBJECTS: dict[str, JsonSchema] = {
    "objectLock": {
        "description": "Put new versions it governs under S3 Object Lock (lock-enabled buckets).",
        "x-kubernetes-validations": [
            {
                "rule": "has(self.mode) == has(self.days)",
                "message": "objectLock.mode and objectLock.days go together",
            }
        ],
    },
}

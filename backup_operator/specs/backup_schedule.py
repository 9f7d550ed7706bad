"""A BackupSchedule's spec: every field once. The CRD's spec schema is generated from
`ScheduleSpec`; the operator reads a schedule with it. Its `jobTemplate.spec` is a
BackupJob's spec, checked when each BackupJob is created (a bad template surfaces as that
job's refusal, not as a schedule that cannot be applied)."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from .fields import Crd, JsonSchema, Pattern


class ConcurrencyPolicy(enum.StrEnum):
    FORBID = "Forbid"  # a firing is skipped while the previous job is unfinished
    ALLOW = "Allow"


class ScheduleSpec(BaseModel):
    schedule: Annotated[
        str,
        Pattern(r"^(\S+\s+){4}\S+$", "five fields (minute hour day month weekday)"),
        Crd("schedule"),
    ] = Field(description='five-field cron expression, in UTC (for example "0 2 * * *")')
    random_offset_seconds: Annotated[int, Crd("randomOffsetSeconds")] = Field(
        0,
        ge=0,
        le=86_400,
        description="each schedule fires up to this many seconds late, a fixed offset derived "
        "from its uid, so that many schedules on one cron do not fire at once",
    )
    concurrency_policy: Annotated[ConcurrencyPolicy, Crd("concurrencyPolicy")] = Field(
        ConcurrencyPolicy.FORBID,
        description="Forbid skips a firing while the previous job is unfinished; Allow does not",
    )
    suspend: Annotated[bool, Crd("suspend")] = Field(
        False, description="no firing while true (its next time is kept)"
    )
    successful_jobs_history_limit: Annotated[int, Crd("successfulJobsHistoryLimit")] = Field(
        3, ge=0, le=1000, description="completed BackupJobs kept, newest first"
    )
    failed_jobs_history_limit: Annotated[int, Crd("failedJobsHistoryLimit")] = Field(
        1, ge=0, le=1000, description="failed or cancelled BackupJobs kept, newest first"
    )
    job_labels: Annotated[dict[str, str] | None, Crd("jobTemplate.metadata.labels")] = Field(
        None, description="labels of each BackupJob it creates"
    )
    job_spec: Annotated[
        dict[str, Any],
        Crd(
            "jobTemplate.spec",
            schema={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = Field(description="the spec of each BackupJob (see BackupJob)")


CRD_SPEC: JsonSchema = {"required": ["schedule", "jobTemplate"]}
CRD_OBJECTS: dict[str, JsonSchema] = {"jobTemplate": {"required": ["spec"]}}

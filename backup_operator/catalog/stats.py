"""A job's statistics: one typed shape for directory and registered jobs, stored as
JSONB in `backup_jobs.stats` (its `version` says which shape a row holds; migration 0026
moved the rows of version 1 over)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Dialect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

# Skipped or failed paths a job names per kind; the API lists every failure.
REPORT_PATHS = 20
# Kinds of problem by which files were not stored (the job partially failed).
FAILURE_KINDS = frozenset({"unreadable", "changed_while_reading"})


class Problem(BaseModel):
    count: int = 0
    paths: list[str] = Field(default_factory=list, description=f"the first {REPORT_PATHS}")


class JobStats(BaseModel):
    version: Literal[2] = 2
    files_seen: int = Field(0, description="files the job covers (walked, or registered)")
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    duplicate: int = Field(0, description="files whose content was stored already")
    deleted: int = Field(0, description="files of the job before it that are gone")
    pending_upload: int = Field(0, description="registered files whose content is not stored")
    bytes: int = Field(0, description="registered jobs: the size of their files")
    bytes_read: int = 0
    bytes_uploaded: int = 0
    bytes_saved: int = Field(0, description="bytes deduplication kept from being uploaded")
    uploads: int = 0
    failed_files: int = 0
    duration_seconds: float | None = None
    parent_job_id: int | None = None
    problems: dict[str, Problem] = Field(
        default_factory=dict,
        description="skipped or failed files by kind (symlinks, unreadable, ...)",
    )

    def failed_paths(self) -> list[str]:
        """The failed paths it names ("path: reason"), kind by kind."""
        return [
            path
            for kind in sorted(FAILURE_KINDS)
            for path in (self.problems[kind].paths if kind in self.problems else [])
        ]


class StatsColumn(TypeDecorator[JobStats]):
    """JobStats in a JSONB column; an empty object (a job not run yet) reads as zeros."""

    impl = JSONB
    cache_ok = True

    def process_bind_param(self, value: JobStats | None, dialect: Dialect) -> Any:
        return None if value is None else value.model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> JobStats:
        return JobStats.model_validate(value or {})

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.orm import Session

from ... import paths
from ...catalog import jobs, lineage
from ...catalog.models import BackupJob, JobFailure, JobStatus, SourceType
from ...services.restores import restore_within
from ...specs.objects import validate_key
from ...storage import ObjectStore
from ..deps import UnitOfWork, get_store
from ..pagination import PageParams, paginate
from ..schemas import (
    DifferenceOut,
    FailureOut,
    Id,
    JobCreate,
    JobOut,
    JobStatusUpdate,
    RestoreOut,
    RestoreRequest,
)

router = APIRouter(prefix="/backup-jobs", tags=["backup-jobs"])


@router.post("", response_model=JobOut, status_code=status.HTTP_201_CREATED)
def create_job(body: JobCreate, request: Request, session: Session = UnitOfWork) -> BackupJob:
    """A pending job; the scheduler starts it once `start_time` has passed. A directory
    job's source must lie under SOURCE_ROOTS."""
    if body.source_type is SourceType.DIRECTORY:
        roots = request.app.state.settings.source_roots
        paths.confined(body.source_system, roots, field="source_system", setting="SOURCE_ROOTS")
    else:
        paths.absolute(body.source_system, field="source_system")
    if body.key_prefix:
        validate_key(body.key_prefix, field="key_prefix")
    return jobs.create_job(session, **body.model_dump())


@router.get("", response_model=list[JobOut])
def list_jobs(
    request: Request,
    response: Response,
    status_filter: JobStatus | None = Query(None, alias="status"),
    bucket_id: Id | None = None,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[BackupJob]:
    found = jobs.list_jobs(
        session, status=status_filter, bucket_id=bucket_id, after=page.after, limit=page.limit
    )
    return paginate(found, request, response)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: Id, session: Session = UnitOfWork) -> BackupJob:
    return jobs.get_job(session, job_id)


@router.get("/{job_id}/failures", response_model=list[FailureOut])
def list_failures(
    job_id: Id,
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[JobFailure]:
    """The files the job could not back up, and why (a partially failed job has some)."""
    found = jobs.list_failures(session, job_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)


@router.get("/{job_id}/diff", response_model=list[DifferenceOut])
def diff_jobs(
    job_id: Id,
    request: Request,
    response: Response,
    against: Id = Query(description="the job to compare with (often an older one)"),
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[lineage.Difference]:
    """The files added, changed and deleted between `against` and this job (paged). Two
    jobs of one source compare in time proportional to what changed between them."""
    job, other = jobs.get_job(session, job_id), jobs.get_job(session, against)
    found = lineage.diff(session, job, other, after=page.after, limit=page.limit)
    return paginate(found, request, response)


@router.patch("/{job_id}", response_model=JobOut)
@router.put("/{job_id}/status", response_model=JobOut)
def update_status(job_id: Id, body: JobStatusUpdate, session: Session = UnitOfWork) -> BackupJob:
    """Move the job along its lifecycle; finished jobs do not change."""
    return jobs.set_status(session, job_id, body.status, error=body.error)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: Id, session: Session = UnitOfWork) -> BackupJob:
    return jobs.cancel_job(session, job_id)


@router.post("/{job_id}/restore", response_model=RestoreOut)
def restore_job(
    job_id: Id,
    body: RestoreRequest,
    request: Request,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> dict[str, Any]:
    """Restore a completed job into a directory on the API's host, verifying every
    checksum; existing files are left alone unless `overwrite`."""
    result = restore_within(
        session,
        store,
        job_id,
        body.target,
        roots=request.app.state.settings.restore_roots,
        prefix=body.prefix,
        path=body.path,
        overwrite=body.overwrite,
    )
    return {"job_id": job_id, "target": body.target, "ok": result.ok, **result.summary()}

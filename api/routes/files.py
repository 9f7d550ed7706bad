from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from ...catalog import files, jobs, lineage
from ...catalog.files import DuplicateGroup, FileIn, FileRecord
from ...catalog.jobs import as_utc
from ...catalog.models import File, ObjectVersion
from ...catalog.objects import object_key
from ...errors import Invalid
from ...services.objects import store_content
from ...specs.objects import validate_key
from ...storage import ObjectStore
from ..deps import UnitOfWork, get_store
from ..pagination import PageParams, paginate
from ..schemas import (
    SHA256_PATTERN,
    DuplicateSummary,
    FileBatch,
    FileOut,
    FileRegister,
    FileRegistered,
    Id,
    VersionOut,
)

router = APIRouter(prefix="/files", tags=["files"])
SPOOL_IN_MEMORY = 8 * 1024 * 1024


def _check_keys(session: Session, job_id: int, paths: list[str], field: str) -> None:
    """Each path's object key is one S3 takes: refused here, before anything is stored,
    rather than by the store at upload."""
    prefix = jobs.get_job(session, job_id).key_prefix
    for index, path in enumerate(paths):
        where = field.format(index=index)
        validate_key(object_key(prefix, path), field=where)


@router.post("", response_model=FileOut, status_code=status.HTTP_201_CREATED)
def register_file(body: FileRegister, session: Session = UnitOfWork) -> FileRecord:
    """Register one file. Content already stored in the bucket makes it a duplicate."""
    _check_keys(session, body.job_id, [body.path], "path")
    fields = body.model_dump(exclude={"job_id"})
    return files.register_files(session, body.job_id, [FileIn(**fields)])[0]


@router.post("/batch", response_model=list[FileRegistered], status_code=status.HTTP_201_CREATED)
def register_batch(body: FileBatch, session: Session = UnitOfWork) -> Response:
    """Register up to 50,000 files in one transaction, in bulk. Answers, per file in the
    order given, its id and whether it is a duplicate (and of which file)."""
    _check_keys(session, body.job_id, [f.path for f in body.files], "files.{index}.path")
    rows = files.register_files(
        session, body.job_id, [FileIn(**f.model_dump()) for f in body.files]
    )
    # Built by hand: validating 50,000 response models would cost more than the inserts.
    return JSONResponse(
        [
            {
                "id": row.id,
                "path": row.path,
                "change": row.change,
                "is_duplicate": row.is_duplicate,
                "canonical_file_id": row.canonical_file_id,
                "object_version_id": row.object_version_id,
            }
            for row in rows
        ],
        status_code=status.HTTP_201_CREATED,
    )


@router.get("", response_model=list[FileOut])
def list_files(
    request: Request,
    response: Response,
    job_id: Id | None = None,
    bucket_id: Id | None = None,
    path_prefix: str | None = Query(None, description="files whose path starts with this"),
    sha256: str | None = Query(None, pattern=SHA256_PATTERN),
    duplicate: bool | None = None,
    as_of: datetime | None = Query(
        None,
        description="with bucket_id and source_system (and key_prefix, when several "
        "sources share the path): the source's tree at this time, from its newest "
        "backup completed by then",
    ),
    source_system: str | None = Query(None, description="with as_of: the source"),
    key_prefix: str | None = Query(None, description="with as_of: the source's key prefix"),
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[File]:
    """Files: with `job_id` (or `as_of`), that job's whole tree as it saw it (`change`
    relative to its parent, and the files deleted since); otherwise the recorded file
    states that match."""
    if as_of is not None:
        if job_id is not None:
            raise Invalid("give job_id or as_of, not both", field="as_of")
        if bucket_id is None or source_system is None:
            raise Invalid("as_of needs bucket_id and source_system", field="as_of")
        job_id = lineage.job_as_of(
            session,
            bucket_id=bucket_id,
            source_system=source_system,
            key_prefix=key_prefix,
            moment=as_utc(as_of),
        ).id
    elif source_system is not None or key_prefix is not None:
        raise Invalid("source_system and key_prefix go with as_of", field="source_system")
    found = files.list_files(
        session,
        job_id=job_id,
        bucket_id=bucket_id,
        path_prefix=path_prefix,
        sha256=sha256,
        duplicates=duplicate,
        after=page.after,
        limit=page.limit,
    )
    return paginate(found, request, response)


@router.get("/duplicates", response_model=list[DuplicateGroup])
def duplicate_report(
    request: Request,
    response: Response,
    bucket_id: Id | None = None,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[DuplicateGroup]:
    """Groups of identical content: the canonical file, how many duplicates, bytes saved."""
    found = files.duplicate_groups(session, bucket_id=bucket_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)


@router.get("/duplicates/summary", response_model=DuplicateSummary)
def duplicate_summary(bucket_id: Id | None = None, session: Session = UnitOfWork) -> dict[str, int]:
    return files.duplicate_summary(session, bucket_id=bucket_id)


@router.get("/{file_id}", response_model=FileOut)
def get_file(file_id: Id, session: Session = UnitOfWork) -> File:
    return files.get_file(session, file_id)


@router.put("/{file_id}/content", response_model=VersionOut, status_code=status.HTTP_201_CREATED)
async def upload_content(
    file_id: Id,
    request: Request,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> ObjectVersion:
    """Upload a canonical file's bytes (application/octet-stream). Checked against the
    registered size and sha256; stored as a new version of `<key_prefix>/<path>`."""
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
        length = 0
        async for chunk in request.stream():
            spool.write(chunk)
            length += len(chunk)
        spool.seek(0)
        if length == 0 and request.headers.get("content-length") not in (None, "0"):
            raise Invalid("request body was cut short", field="body")
        return await run_in_threadpool(store_content, session, store, file_id, spool, length)

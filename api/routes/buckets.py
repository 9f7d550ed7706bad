from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.orm import Session

from ...catalog import buckets
from ...catalog.models import Bucket
from ...services import buckets as bucket_service
from ...storage import ObjectStore
from ..deps import UnitOfWork, get_store
from ..pagination import PageParams, paginate
from ..schemas import BucketCreate, BucketOut, Id

router = APIRouter(prefix="/buckets", tags=["buckets"])


@router.post("", response_model=BucketOut, status_code=status.HTTP_201_CREATED)
def create_bucket(
    body: BucketCreate,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> Bucket:
    """Create the bucket in the catalog and, versioned, in the object store."""
    return bucket_service.create_bucket(
        session, store, name=body.name, object_lock=body.object_lock
    )


@router.get("", response_model=list[BucketOut])
def list_buckets(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[Bucket]:
    return paginate(
        buckets.list_buckets(session, after=page.after, limit=page.limit), request, response
    )


@router.get("/{bucket_id}", response_model=BucketOut)
def get_bucket(bucket_id: Id, session: Session = UnitOfWork) -> Bucket:
    return buckets.get_bucket(session, bucket_id)


@router.delete("/{bucket_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_bucket(
    bucket_id: Id,
    force: bool = Query(False, description="also delete its jobs, objects and every version"),
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> None:
    bucket_service.delete_bucket(session, store, bucket_id, force=force)

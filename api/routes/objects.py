from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from ...catalog import objects, tags
from ...catalog.models import BackupObject, ObjectVersion
from ...services import objects as object_service
from ...services import tags as tag_service
from ...storage import ObjectStore, StoredVersion
from ..deps import UnitOfWork, get_store
from ..pagination import PageParams, paginate
from ..schemas import Id, LatestOut, ObjectOut, TagSet, VersionOut

router = APIRouter(prefix="/backup-objects", tags=["backup-objects"])


@router.get("", response_model=list[ObjectOut])
def list_objects(
    request: Request,
    response: Response,
    bucket_id: Id | None = None,
    key_prefix: str | None = None,
    tag_key: str | None = Query(None, description="objects carrying this tag"),
    tag_value: str | None = Query(None, description="...with this value (needs tag_key)"),
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[BackupObject]:
    tag = (tag_key, tag_value) if tag_key is not None else None
    found = objects.list_objects(
        session,
        bucket_id=bucket_id,
        key_prefix=key_prefix,
        tag=tag,
        after=page.after,
        limit=page.limit,
    )
    return paginate(found, request, response)


@router.get("/latest", response_model=list[LatestOut])
def latest_versions(
    request: Request,
    response: Response,
    bucket_id: Id | None = None,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[dict[str, Any]]:
    """The latest live version of each object."""
    found = objects.latest_versions(
        session, bucket_id=bucket_id, after=page.after, limit=page.limit
    )
    items = [
        {**ObjectOut.model_validate(item.object).model_dump(), "latest_version": item.version}
        for item in found.items
    ]
    paginate(found, request, response)
    return items


@router.get("/{object_id}", response_model=ObjectOut)
def get_object(object_id: Id, session: Session = UnitOfWork) -> BackupObject:
    return objects.get_object(session, object_id)


@router.get("/{object_id}/versions", response_model=list[VersionOut])
def list_versions(
    request: Request,
    response: Response,
    object_id: Id,
    include_deleted: bool = False,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[ObjectVersion]:
    """The catalog's versions of an object, oldest first."""
    found = objects.list_versions(
        session, object_id, include_deleted=include_deleted, after=page.after, limit=page.limit
    )
    return paginate(found, request, response)


@router.get("/{object_id}/store-versions", response_model=list[StoredVersion])
def list_store_versions(
    object_id: Id, session: Session = UnitOfWork, store: ObjectStore = Depends(get_store)
) -> list[StoredVersion]:
    """The versions the object store itself holds for this object's key, newest first."""
    obj = objects.get_object(session, object_id)
    bucket = objects.object_bucket(session, obj)
    return [v for v in store.list_versions(bucket.name, prefix=obj.key) if v.key == obj.key]


@router.get("/{object_id}/versions/{version_id}", response_model=VersionOut)
def get_version(object_id: Id, version_id: str, session: Session = UnitOfWork) -> ObjectVersion:
    return objects.get_version(session, object_id, version_id)


@router.delete("/{object_id}/versions/{version_id}", response_model=VersionOut)
def delete_version(
    object_id: Id,
    version_id: str,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> ObjectVersion:
    """Delete one version in the object store by version id, and mark it deleted."""
    return object_service.delete_version(
        session, store, object_id, version_id, reason="deleted through the API"
    )


@router.get("/{object_id}/tags", response_model=TagSet)
def get_tags(object_id: Id, session: Session = UnitOfWork) -> dict[str, Any]:
    return {"tags": tags.list_tags(session, object_id)}


@router.put("/{object_id}/tags", response_model=TagSet)
def replace_tags(
    object_id: Id,
    body: TagSet,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> dict[str, Any]:
    """Replace the whole tag set (catalog and the latest S3 version)."""
    return {"tags": tag_service.replace_tags(session, store, object_id, body.tags)}


@router.patch("/{object_id}/tags", response_model=TagSet)
def merge_tags(
    object_id: Id,
    body: TagSet,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> dict[str, Any]:
    """Add or change the given tags, keeping the others."""
    return {"tags": tag_service.merge_tags(session, store, object_id, body.tags)}


@router.delete("/{object_id}/tags/{key}", response_model=TagSet)
def delete_tag(
    object_id: Id,
    key: str,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> dict[str, Any]:
    return {"tags": tag_service.delete_tag(session, store, object_id, key)}

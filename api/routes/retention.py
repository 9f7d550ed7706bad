from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.orm import Session

from ...catalog import retention
from ...catalog.models import BackupObject, ObjectVersion, RetentionPolicy, RetentionRun
from ...services import retention as retention_service
from ...storage import ObjectStore
from ..auth import request_actor
from ..deps import UnitOfWork, get_store
from ..pagination import PageParams, paginate
from ..schemas import (
    ApplyOut,
    Count,
    Id,
    ObjectIds,
    ObjectOut,
    PlannedVersionOut,
    PlanOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
    RunOut,
    VersionOut,
)

router = APIRouter(prefix="/retention-policies", tags=["retention-policies"])


@router.post("", response_model=PolicyOut, status_code=status.HTTP_201_CREATED)
def create_policy(body: PolicyCreate, session: Session = UnitOfWork) -> RetentionPolicy:
    """Rules combine as a union: a version is kept if any rule keeps it. No rules: keep all."""
    return retention.create_policy(session, **body.model_dump())


@router.get("", response_model=list[PolicyOut])
def list_policies(
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[RetentionPolicy]:
    return paginate(
        retention.list_policies(session, after=page.after, limit=page.limit), request, response
    )


@router.get("/{policy_id}", response_model=PolicyOut)
def get_policy(policy_id: Id, session: Session = UnitOfWork) -> RetentionPolicy:
    return retention.get_policy(session, policy_id)


@router.patch("/{policy_id}", response_model=PolicyOut)
def update_policy(
    policy_id: Id, body: PolicyUpdate, session: Session = UnitOfWork
) -> RetentionPolicy:
    """Change the given fields; send null to remove a rule."""
    return retention.update_policy(session, policy_id, **body.model_dump(exclude_unset=True))


@router.delete("/{policy_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_policy(policy_id: Id, session: Session = UnitOfWork) -> None:
    retention.delete_policy(session, policy_id)


@router.post("/{policy_id}/attach", response_model=Count)
def attach(policy_id: Id, body: ObjectIds, session: Session = UnitOfWork) -> Count:
    """Let this policy govern these objects."""
    return Count(count=retention.attach(session, policy_id, body.object_ids))


@router.post("/{policy_id}/detach", response_model=Count)
def detach(policy_id: Id, body: ObjectIds, session: Session = UnitOfWork) -> Count:
    return Count(count=retention.detach(session, policy_id, body.object_ids))


@router.get("/{policy_id}/objects", response_model=list[ObjectOut])
def governed_objects(
    policy_id: Id,
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[BackupObject]:
    found = retention.governed_objects(session, policy_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)


def _planned(items: list[retention.PlannedVersion]) -> list[PlannedVersionOut]:
    return [
        PlannedVersionOut(
            object_id=i.object_id,
            bucket=i.bucket,
            key=i.key,
            version=VersionOut.model_validate(i.version),
            keep=i.keep,
            reasons=list(i.reasons),
        )
        for i in items
    ]


@router.post("/{policy_id}/dry-run", response_model=PlanOut)
def dry_run(policy_id: Id, session: Session = UnitOfWork) -> dict[str, Any]:
    """What applying the policy now would delete and keep, and why. Changes nothing."""
    plan = retention.dry_run(session, policy_id)
    delete = plan.to_delete
    return {
        "policy_id": policy_id,
        "evaluated_at": plan.evaluated_at,
        "keep": len(plan.versions) - len(delete),
        "delete": len(delete),
        "bytes_to_free": plan.bytes_to_free,
        "versions": _planned(plan.versions),
        "jobs": [
            {
                "job_id": j.job_id,
                "completed_at": j.completed_at,
                "keep": j.keep,
                "reasons": list(j.reasons),
            }
            for j in plan.jobs
        ],
    }


@router.post("/{policy_id}/apply", response_model=ApplyOut)
def apply(
    policy_id: Id,
    request: Request,
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> dict[str, Any]:
    """Delete the versions the policy does not keep, in the store and the catalog.
    Versions under object lock or legal hold are reported, never attempted. The run is
    recorded as an audit entry (`run_id`)."""
    result = retention_service.apply(
        session,
        store,
        policy_id,
        actor=request_actor(request),
        prune_waste=request.app.state.settings.pack_prune_waste,
    )
    return {
        "policy_id": policy_id,
        "run_id": result.run.id,
        "forgotten_jobs": result.plan.jobs_to_forget if result.run.forgotten_jobs else [],
        "deleted": len(result.deleted),
        "bytes_freed": result.bytes_freed,
        "locked": result.locked,
        "refused": result.refused,
        "versions": _planned(result.deleted),
    }


@router.get("/{policy_id}/runs", response_model=list[RunOut])
def policy_runs(
    policy_id: Id,
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[RetentionRun]:
    """The audit of this policy's real runs, oldest first."""
    retention.get_policy(session, policy_id)
    found = retention.list_runs(session, policy_id=policy_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)


runs_router = APIRouter(prefix="/retention-runs", tags=["retention-policies"])


@runs_router.get("", response_model=list[RunOut])
def list_runs(
    request: Request,
    response: Response,
    policy_id: Id | None = None,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[RetentionRun]:
    """Every real retention run: who, which policy, when, what it deleted, bytes freed."""
    found = retention.list_runs(session, policy_id=policy_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)


@runs_router.get("/{run_id}", response_model=RunOut)
def get_run(run_id: Id, session: Session = UnitOfWork) -> RetentionRun:
    return retention.get_run(session, run_id)


@runs_router.get("/{run_id}/deleted", response_model=list[VersionOut])
def run_deletions(
    run_id: Id,
    request: Request,
    response: Response,
    page: PageParams = Depends(),
    session: Session = UnitOfWork,
) -> Sequence[ObjectVersion]:
    """The versions this run deleted."""
    found = retention.run_deletions(session, run_id, after=page.after, limit=page.limit)
    return paginate(found, request, response)

"""The web interface: server-rendered pages under /ui, with no script and nothing from a
CDN (its one stylesheet is served from here). It signs in with the API's own tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from ...catalog import buckets, jobs, overview, tree
from ...catalog.models import BackupJob, JobStatus
from ...errors import Conflict, NotFound
from ...storage import ObjectStore
from ..auth import UI_COOKIE, UI_PREFIX, Tokens
from ..deps import UnitOfWork, get_store
from ..schemas import Id

HERE = Path(__file__).parent
HISTORY_PAGE = 50
TREE_PAGE = 200
DOWNLOAD_LINK_LIFETIME = timedelta(minutes=5)

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
static = StaticFiles(directory=HERE / "static")


def size(count: int | None) -> str:
    """Bytes as people read them: 1.5 MiB."""
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(job: BackupJob) -> str:
    if job.started_at is None or job.completed_at is None:
        return ""
    seconds = (job.completed_at - job.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def moment(at: datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters.update(size=size, moment=moment)
templates.env.globals.update(duration=duration, statuses=[s.value for s in JobStatus])


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"auth": request.app.state.settings.auth_enabled, **context},
        status_code=status_code,
    )


def _next_page(given: str | None) -> str:
    """Where a login goes on: a page of the interface, never another site."""
    if given and given.startswith(UI_PREFIX) and not given.startswith("//"):
        return given
    return f"{UI_PREFIX}/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    if not request.app.state.settings.auth_enabled:
        return RedirectResponse(_next_page(next), status_code=303)
    return _page(request, "login.html", next=_next_page(next), error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    goes_on = _next_page((form.get("next") or [""])[0])
    if not Tokens(request.app.state.settings).may_read(token):
        error = "That token is not one of this service's API tokens."
        return _page(request, "login.html", status_code=401, next=goes_on, error=error)
    response = RedirectResponse(goes_on, status_code=303)
    response.set_cookie(
        UI_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=UI_PREFIX,
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
    response.delete_cookie(UI_COOKIE, path=UI_PREFIX)
    return response


@router.get("", response_class=HTMLResponse)
def overview_page(request: Request, session: Session = UnitOfWork) -> Response:
    return _page(request, "overview.html", sources=overview.source_summaries(session))


@router.get("/sources/{source_id}", response_class=HTMLResponse)
def source_page(
    request: Request,
    source_id: Id,
    status: JobStatus | None = Query(None, description="only jobs that ended so"),
    before: Id | None = Query(None, description="only jobs older than this one"),
    session: Session = UnitOfWork,
) -> Response:
    source = overview.get_source(session, source_id)
    jobs = overview.source_history(
        session, source_id, status=status, before=before, limit=HISTORY_PAGE + 1
    )
    return _page(
        request,
        "source.html",
        source=source,
        bucket=buckets.get_bucket(session, source.bucket_id).name,
        jobs=jobs[:HISTORY_PAGE],
        older=jobs[HISTORY_PAGE - 1].id if len(jobs) > HISTORY_PAGE else None,
        status=status.value if status else "",
        timeline=timeline(list(reversed(jobs[:HISTORY_PAGE]))),
    )


def timeline(jobs: list[BackupJob]) -> list[dict[str, Any]]:
    """One bar per job, oldest first: its height the bytes it read, its class the outcome."""
    largest = max((job.stats.bytes_read or job.stats.bytes for job in jobs), default=0) or 1
    return [
        {
            "job": job,
            "x": 4 + 16 * index,
            "height": 4 + round(52 * (job.stats.bytes_read or job.stats.bytes) / largest),
        }
        for index, job in enumerate(jobs)
    ]


@router.get("/jobs/{job_id}/tree", response_class=HTMLResponse)
def tree_page(
    request: Request,
    job_id: Id,
    path: str = Query("", description="the folder, from the tree's root"),
    after: str | None = Query(None, description="the page after this entry"),
    session: Session = UnitOfWork,
) -> Response:
    job = jobs.get_job(session, job_id)
    listing = tree.folder(session, job, path, after=after, limit=TREE_PAGE)
    parts = listing.path.rstrip("/").split("/") if listing.path else []
    crumbs = [("/".join(parts[: i + 1]) + "/", part) for i, part in enumerate(parts)]
    return _page(
        request,
        "tree.html",
        job=job,
        source=overview.get_source(session, job.source_id),
        folder=listing,
        crumbs=crumbs,
    )


@router.get("/jobs/{job_id}/download")
def download(
    job_id: Id,
    path: str = Query(..., description="the file, from the tree's root"),
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> Response:
    """One file as it was in the job: its own S3 version through a presigned URL (the
    bytes never pass through here), or its range of a pack."""
    job = jobs.get_job(session, job_id)
    stored = next(tree.stored_files(session, job, path=path), None)
    if stored is None:
        raise NotFound(f"job {job_id} has no file {path!r}", field="path")
    if stored.bucket is None or stored.key is None or stored.version_id is None:
        raise Conflict(f"the content of {path!r} is not stored", field="path")
    name = stored.path.rsplit("/", 1)[-1]
    if stored.offset is None:
        url = store.download_url(
            stored.bucket,
            stored.key,
            stored.version_id,
            filename=name,
            expires=DOWNLOAD_LINK_LIFETIME,
        )
        return RedirectResponse(url, status_code=303)
    data = store.read_range(
        stored.bucket, stored.key, stored.version_id, stored.offset, stored.size
    )
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"},
    )

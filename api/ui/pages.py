"""The web interface: server-rendered pages under /ui, with no script and nothing from a
CDN (its one stylesheet is served from here). It signs in with the API's own tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from ...catalog import buckets, jobs, lineage, overview, retention, search, tags, tree
from ...catalog.models import BackupJob, JobStatus
from ...engine.archive import zip_of_folder
from ...errors import Conflict, DomainError, Invalid, NotFound
from ...services import tags as tag_service
from ...services.restores import restore_within
from ...storage import ObjectStore, attachment
from ..auth import UI_COOKIE, Tokens
from ..deps import UnitOfWork, get_store
from ..middleware import UI_PREFIX
from ..schemas import Id

HERE = Path(__file__).parent
HISTORY_PAGE = 50
TREE_PAGE = 200
COMPARE_PAGE = 200
SEARCH_PAGE = 50
PLAN_POINTS = 500  # the newest points of a plan drawn and listed
TIMELINE_WIDTH = 800
DOWNLOAD_LINK_LIFETIME = timedelta(minutes=5)


def same_site(request: Request) -> None:
    """A form may change something only from these pages: a browser names where a POST
    comes from (Origin), and another site's page, even one reaching this loopback API
    when it runs without tokens, is refused."""
    origin = request.headers.get("origin")
    if request.method in ("GET", "HEAD") or origin is None:
        return
    if urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "a page of another site may not change anything here")


router = APIRouter(prefix=UI_PREFIX, include_in_schema=False, dependencies=[Depends(same_site)])
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
        {
            "auth": request.app.state.settings.auth_enabled,
            "may_edit": _may_edit(request),
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, status: int, error: DomainError) -> Response:
    """A domain error met in the interface, as a page that says what and which field."""
    return _page(request, "error.html", status_code=status, error=error, status=status)


def _may_edit(request: Request) -> bool:
    """Open (no tokens), or signed in with a read-write token (the one kind given an actor)."""
    auth: bool = request.app.state.settings.auth_enabled
    return not auth or getattr(request.state, "actor", None) is not None


def _stored_file(session: Session, job: BackupJob, path: str) -> tree.Stored:
    stored = next(tree.stored_files(session, job, path=path), None)
    if stored is None:
        raise NotFound(f"job {job.id} has no file {path!r}", field="path")
    return stored


async def _form(request: Request) -> dict[str, str]:
    """A posted form's fields (urlencoded; the first value of each, blank ones kept)."""
    body = (await request.body()).decode("utf-8", "replace")
    return {name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()}


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": attachment(name)}


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
    form = await _form(request)
    token = form.get("token", "").strip()
    goes_on = _next_page(form.get("next"))
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
    stored = _stored_file(session, job, path)
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
        headers=_attachment(name),
    )


@router.get("/jobs/{job_id}/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    job_id: Id,
    against: Id | None = Query(
        None, description="the job to compare with: its parent if not given"
    ),
    after: Id | None = Query(None, description="the page after this difference"),
    session: Session = UnitOfWork,
) -> Response:
    """What was added, changed and deleted between two jobs of a source."""
    job = jobs.get_job(session, job_id)
    other_id = against or job.parent_job_id
    if other_id is None:
        raise NotFound(f"job {job_id} has no job before it to compare with", field="against")
    other = jobs.get_job(session, other_id)
    found = lineage.diff(session, job, other, after=after, limit=COMPARE_PAGE)
    return _page(
        request,
        "compare.html",
        job=job,
        other=other,
        source=overview.get_source(session, job.source_id),
        differences=found.items,
        more_after=found.next_after,
        others=overview.source_history(session, job.source_id, limit=HISTORY_PAGE),
    )


@router.get("/jobs/{job_id}/zip")
def folder_zip(
    request: Request,
    job_id: Id,
    path: str = Query("", description="the folder, from the tree's root"),
    session: Session = UnitOfWork,
    store: ObjectStore = Depends(get_store),
) -> Response:
    """The folder as a ZIP archive, streamed while it is made (nothing staged)."""
    job = jobs.get_job(session, job_id)
    tree.folder(session, job, path, after=None, limit=1)  # a job with a tree, or why not
    name = (tree.folder_path(path).rstrip("/").rsplit("/", 1)[-1] or f"job-{job_id}") + ".zip"
    return StreamingResponse(
        zip_of_folder(request.app.state.sessions, store, job_id, path),
        media_type="application/zip",
        headers=_attachment(name),
    )


@router.get("/jobs/{job_id}/file", response_class=HTMLResponse)
def file_page(
    request: Request,
    job_id: Id,
    path: str = Query(..., description="the file, from the tree's root"),
    session: Session = UnitOfWork,
) -> Response:
    """One file of a job: what was backed up, where it is stored, and (for a file that
    is its own object) that object's tags, which a read-write token may change."""
    job = jobs.get_job(session, job_id)
    stored = _stored_file(session, job, path)
    own = stored.object_id is not None and stored.offset is None
    return _page(
        request,
        "file.html",
        job=job,
        source=overview.get_source(session, job.source_id),
        stored=stored,
        folder=tree.folder_path(stored.path.rpartition("/")[0]),
        tags=tags.list_tags(session, stored.object_id) if own and stored.object_id else None,
    )


@router.post("/objects/{object_id}/tags")
async def edit_tags(
    request: Request,
    object_id: Id,
    store: ObjectStore = Depends(get_store),
) -> Response:
    """The object's whole tag set from the form's lines (key=value), then back to the
    file it was edited from."""
    form = await _form(request)
    lines = form.get("tags", "").splitlines()
    wanted = dict(line.split("=", 1) for line in lines if line.strip() and "=" in line)
    refused = [line for line in lines if line.strip() and "=" not in line]
    if refused:
        raise Invalid(f"{refused[0]!r}: one tag a line, as key=value", field="tags")
    with request.app.state.sessions() as session:
        await run_in_threadpool(
            tag_service.replace_tags,
            session,
            store,
            object_id,
            {key.strip(): value.strip() for key, value in wanted.items()},
        )
    return RedirectResponse(_next_page(form.get("back")), status_code=303)


@router.get("/policies", response_class=HTMLResponse)
def policies_page(
    request: Request,
    after: Id | None = Query(None, description="the page after this policy"),
    session: Session = UnitOfWork,
) -> Response:
    found = retention.list_policies(session, after=after, limit=HISTORY_PAGE)
    return _page(request, "policies.html", policies=found.items, more_after=found.next_after)


@router.get("/policies/{policy_id}", response_class=HTMLResponse)
def policy_page(request: Request, policy_id: Id, session: Session = UnitOfWork) -> Response:
    """What a run of the policy would keep and delete now, and why: its plan, read only
    (it is not recorded as the dry run a policy may require; POST .../dry-run is)."""
    policy = retention.get_policy(session, policy_id)
    plan = retention.plan(session, policy_id)
    if plan.jobs:
        points = [
            (job.completed_at, f"job {job.job_id}", job.keep, job.reasons) for job in plan.jobs
        ]
    else:
        points = [
            (
                item.version.created_at,
                f"{item.key} @ {item.version.version_id}",
                item.keep,
                item.reasons,
            )
            for item in plan.versions
        ]
    points.sort(key=lambda point: point[0])
    shown = points[-PLAN_POINTS:]
    return _page(
        request,
        "policy.html",
        policy=policy,
        plan=plan,
        points=list(reversed(shown)),
        hidden=len(points) - len(shown),
        deleted=sum(1 for point in points if not point[2]),
        marks=_marks(shown),
        width=TIMELINE_WIDTH,
    )


def _marks(points: list[tuple[datetime, str, bool, tuple[str, ...]]]) -> list[dict[str, Any]]:
    """Each point's place on the timeline, oldest left; kept above the line, deleted below."""
    if not points:
        return []
    first, last = points[0][0], points[-1][0]
    span = (last - first).total_seconds() or 1
    return [
        {
            "x": 10 + round((TIMELINE_WIDTH - 20) * (at - first).total_seconds() / span),
            "y": 20 if keep else 44,
            "keep": keep,
            "title": f"{moment(at)}: {what} {'kept' if keep else 'deleted'} ({'; '.join(why)})",
        }
        for at, what, keep, why in points
    ]


@router.get("/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    q: str = Query("", description="a fragment of a path, any case"),
    source: Id | None = Query(None, description="only this source's backups"),
    bucket: Id | None = Query(None, description="only the backups in this bucket"),
    session: Session = UnitOfWork,
) -> Response:
    """A file by name or path fragment across every backup, with the contents it had and
    the jobs that saw each."""
    found: list[search.Found] = []
    more = False
    if q:
        found, more = search.find(session, q, source_id=source, bucket_id=bucket, limit=SEARCH_PAGE)
    scope = overview.get_source(session, source) if source is not None else None
    return _page(
        request, "search.html", q=q, found=found, more=more, scope=scope, limit=SEARCH_PAGE
    )


@router.post("/jobs/{job_id}/restore", response_class=HTMLResponse)
async def restore_page(
    request: Request, job_id: Id, store: ObjectStore = Depends(get_store)
) -> Response:
    """Restore a folder or a file of the job to a directory on the server (under
    RESTORE_ROOTS), every checksum verified; existing files are kept unless asked."""
    field = await _form(request)
    what = field.get("path", "")
    folder = what == "" or what.endswith("/")
    with request.app.state.sessions() as session:
        result = await run_in_threadpool(
            restore_within,
            session,
            store,
            job_id,
            field.get("target", ""),
            roots=request.app.state.settings.restore_roots,
            prefix=what if folder and what else None,
            path=None if folder else what,
            overwrite=field.get("overwrite") == "yes",
        )
    return _page(
        request,
        "restored.html",
        job_id=job_id,
        what=what or "/",
        target=field.get("target"),
        result=result,
    )

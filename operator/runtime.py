"""What every handler shares, built once at startup and handed over through `memo`: the
catalog's sessions, the object store, the scheduler that runs path-source jobs in this
process, and the Kubernetes clients. Also how domain errors become Kopf's."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Generic, NamedTuple, TypeVar

import kopf
import kubernetes
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..catalog import jobs
from ..catalog.changes import JobChangeListener
from ..catalog.models import BackupJob, JobStatus, Runner
from ..catalog.stats import JobStats
from ..db import make_engine, make_sessionmaker
from ..deadline import Deadline, DeadlineExceeded, run_within
from ..engine.backup import Options
from ..errors import DomainError, Unavailable
from ..metrics import PREFIX, CatalogCollector
from ..retry import RetriesExhausted, outage
from ..services.notify import webhook_from
from ..services.runner import EngineRunner
from ..services.scheduler import JobCancelled, JobRunner, Scheduler
from ..settings import Settings, get_settings
from ..specs.fields import crd_path, parse, read_resource
from ..storage import ObjectStore
from .followers import Followers
from .resources import BACKUP_JOBS, GROUP, VERSION

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Set by the schedules' handler: what "no successful backup within 2x the interval" needs.
SCHEDULE_INTERVAL = Gauge(
    f"{PREFIX}_schedule_interval_seconds",
    "Seconds between two firings of a BackupSchedule",
    ["namespace", "schedule"],
    registry=None,
)
# The operator's worker asks the catalog for due jobs at least this often when idle.
IDLE_SECONDS = 30.0
OPERATOR_EXPORTED = {f"{PREFIX}_schedule_interval_seconds"}


def configure(settings: kopf.OperatorSettings, memo: kopf.Memo) -> None:
    app: Settings = get_settings()
    # Kopf's own bookkeeping goes to annotations; status holds only what users read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    engine = make_engine(app.database_url(), pool_size=app.db_pool_size)
    memo.app = app
    memo.engine = engine
    memo.sessions = make_sessionmaker(engine)
    memo.notifier = webhook_from(app.webhook())
    memo.store = ObjectStore.from_settings(app)
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    api = kubernetes.client.ApiClient()
    memo.batch = kubernetes.client.BatchV1Api(api)
    memo.core = kubernetes.client.CoreV1Api(api)
    memo.custom = kubernetes.client.CustomObjectsApi(api)
    memo.scheduler = Scheduler(
        memo.sessions,
        runner=ForLiveResources(
            EngineRunner(
                memo.sessions,
                memo.store,
                Options.for_settings(app),
                source_roots=app.source_roots,
            ),
            memo.custom,
        ),
        claims=Runner.OPERATOR,
        interval=app.operator_poll_seconds,
        # Its jobs are made by this operator, which wakes it (register, spec changes).
        idle_interval=IDLE_SECONDS,
        heartbeat_timeout=app.job_heartbeat_timeout_seconds,
        notifier=memo.notifier,
        max_attempts=app.job_max_attempts,
    )
    memo.scheduler.start()
    memo.followers = Followers()  # of catalog jobs, by id
    memo.schedules = Followers()  # of BackupSchedules, by (namespace, name)
    memo.changes = JobChangeListener(
        app.database_url(), memo.followers.changed, memo.followers.everyone
    )
    memo.changes.start()
    memo.metrics_server = None
    if app.metrics_port:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            CatalogCollector(
                memo.sessions,
                memo.store,
                max_series=app.metrics_max_series,
                max_age=app.metrics_max_age_seconds,
            )
        )
        registry.register(SCHEDULE_INTERVAL)
        memo.metrics_server, _ = start_http_server(app.metrics_port, registry=registry)


class ForLiveResources:
    """Runs a claimed job only while its BackupJob exists: one let go at its deletion
    deadline while the catalog was down leaves behind a job that nobody wants."""

    def __init__(self, runner: JobRunner, custom: Any) -> None:
        self.runner = runner
        self.custom = custom

    def __call__(self, session: Session, job: BackupJob, heartbeat: Callable[[], None]) -> JobStats:
        if job.external_uid is not None and job.namespace is not None and not self._wanted(job):
            why = f"ResourceGone: BackupJob {job.job_name} (uid {job.external_uid}) is gone"
            jobs.set_status(session, job.id, JobStatus.CANCELLED, error=why)
            session.commit()
            raise JobCancelled(why)
        return self.runner(session, job, heartbeat)

    def _wanted(self, job: BackupJob) -> bool:
        name = job.job_name.split("/", 1)[-1]
        try:
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, job.namespace, BACKUP_JOBS, name
            )
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return False
            logger.warning("job %s: cannot look up its BackupJob (%s); running it", job.id, error)
            return True
        return bool(found["metadata"].get("uid") == job.external_uid)


def shut_down(memo: kopf.Memo) -> None:
    """Running jobs are handed back as pending, to be resumed by the next operator."""
    memo.scheduler.stop(timeout=30)
    memo.changes.stop()
    memo.notifier.close(timeout=10)
    memo.engine.dispose()
    if memo.metrics_server is not None:
        memo.metrics_server.shutdown()


class InvalidSpec(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@contextlib.contextmanager
def domain_errors(
    spec_prefix: str = "spec",
    *,
    field: str | None = None,
    naming: Callable[[str], str] = lambda catalog_field: catalog_field,
) -> Iterator[None]:
    """Outages are retried by Kopf with a delay; bad input becomes InvalidSpec (naming the
    field, or `field` when the whole call is about one) for the handler to show."""
    try:
        yield
    except (Unavailable, RetriesExhausted, SQLAlchemyError) as error:
        why = outage(error)
        if why is None:
            raise
        raise kopf.TemporaryError(f"{why}; retrying", delay=10) from None
    except DomainError as error:
        where = field or (f"{spec_prefix}.{naming(error.field)}" if error.field else spec_prefix)
        raise InvalidSpec(where, error.message) from None
    except kubernetes.client.ApiException as error:
        raise kopf.TemporaryError(
            f"Kubernetes API: {error.status} {error.reason}", delay=10
        ) from None


Spec = TypeVar("Spec", bound=BaseModel)


def read_spec(model: type[Spec], spec: Any) -> Spec:
    """A resource's spec as its typed model (backup_operator/specs); a bad field raises
    InvalidSpec naming it as the resource does."""
    with domain_errors(naming=lambda field: crd_path(model, field)):
        return parse(model, read_resource(model, spec))


class Finalized(NamedTuple, Generic[T]):
    done: bool  # False: given up at the deadline (and said so)
    result: T | None


def finalize_within(
    memo: kopf.Memo, runtime: timedelta, body: Any, work: Callable[[Deadline], T], leaves: str
) -> Finalized[T]:
    """A finalizer's work, bounded by DELETION_DEADLINE_SECONDS from its first attempt:
    outages are retried by Kopf until then; past it the resource is let go anyway, with
    a DeletionIncomplete Warning saying what blocked the work and what it `leaves`."""
    limit = memo.app.deletion_deadline_seconds
    try:
        with domain_errors():
            return Finalized(True, run_within(max(limit - runtime.total_seconds(), 1.0), work))
    except (kopf.TemporaryError, DeadlineExceeded) as blocked:
        retry, remaining = getattr(blocked, "delay", None), limit - runtime.total_seconds()
        if (
            retry is not None and remaining > 0
        ):  # an outage: tried again, the last time at the deadline
            raise kopf.TemporaryError(str(blocked), delay=min(retry, remaining)) from None
        kopf.warn(
            body,
            reason="DeletionIncomplete",
            message=f"gave up after {limit:g}s (DELETION_DEADLINE_SECONDS): {blocked}. {leaves}",
        )
        return Finalized(False, None)

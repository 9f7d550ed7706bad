"""Fixtures: a real PostgreSQL and a real S3 server, started once per session on free
loopback ports (or taken from TEST_DATABASE_URL / TEST_MINIO_ENDPOINT), a fresh
database per test cloned from a migrated template, and unique bucket names."""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.catalog.stats import JobStats
from backup_operator.db import make_engine, make_sessionmaker
from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3
from backup_operator.migrate import upgrade
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore, make_client

TEMPLATE = "catalog_template"


def plain(url: str) -> str:
    """The URL as libpq (psycopg) takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the server's maintenance database."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres")).start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_url(pg_url: str) -> str:
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = with_database(pg_url, TEMPLATE)
    upgrade(url)
    return url


@pytest.fixture
def db_url(pg_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield with_database(pg_url, name)
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url, pool_size=20)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(endpoint, access key, secret key) of a running S3 server."""
    given = os.environ.get("TEST_MINIO_ENDPOINT")
    if given:
        yield (
            given,
            os.environ.get("TEST_MINIO_ACCESS_KEY", "minioadmin"),
            os.environ.get("TEST_MINIO_SECRET_KEY", "minioadmin"),
        )
        return
    server = EmbeddedS3(
        tmp_path_factory.mktemp("s3"), access_key="testkey", secret_key="testsecret"
    )
    server.start()
    try:
        yield server.endpoint, server.access_key, server.secret_key
    finally:
        server.stop()


@pytest.fixture
def store(s3_endpoint: tuple[str, str, str]) -> ObjectStore:
    endpoint, access, secret = s3_endpoint
    return ObjectStore(make_client(endpoint, access, secret, secure=False))


@pytest.fixture
def bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


def make_settings(
    db_url: str, endpoint: str, access: str, secret: str, **extra: object
) -> Settings:
    values: dict[str, object] = {
        "sqlalchemy_database_url": db_url,
        "minio_endpoint": endpoint,
        "minio_access_key": access,
        "minio_secret_key": secret,
        "minio_secure": False,
        "scheduler_enabled": False,
        "retry_after_seconds": 7,
        # Tests back up and restore their own temporary directories.
        "source_roots": [Path("/")],
        "restore_roots": [Path(tempfile.gettempdir())],
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str, s3_endpoint: tuple[str, str, str]) -> Settings:
    return make_settings(db_url, *s3_endpoint)


@pytest.fixture
def bucket_id(session: Session, store: ObjectStore, bucket_name: str) -> int:
    """A versioned bucket, in the catalog and the store."""
    from backup_operator.services.buckets import create_bucket

    return create_bucket(session, store, name=bucket_name, object_lock=False).id


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def bucket(client: TestClient, bucket_name: str) -> dict[str, object]:
    response = client.post("/buckets/", json={"name": bucket_name})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def job(client: TestClient, bucket: dict[str, object]) -> dict[str, object]:
    response = client.post(
        "/backup-jobs/",
        json={
            "job_name": "nightly",
            "source_system": "/data",
            "bucket_id": bucket["id"],
            "source_type": "registered",
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


@contextmanager
def serving(app: object) -> Iterator[str]:
    """The app behind a real uvicorn on a free loopback port: its base URL."""
    import threading
    import time

    import uvicorn

    from backup_operator.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def migrated_catalog(server: EmbeddedPostgres) -> str:
    """A database `catalog` on `server`, migrated: its URL."""
    with psycopg.connect(plain(server.url()), autocommit=True) as conn:
        conn.execute("CREATE DATABASE catalog")
    url = server.url("catalog")
    upgrade(url)
    return url


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, which the test may stop."""
    server = EmbeddedPostgres(tmp_path / "pg").start()
    yield server
    server.stop()


@pytest.fixture
def private_s3(tmp_path: Path) -> Iterator[EmbeddedS3]:
    server = EmbeddedS3(tmp_path / "s3").start()
    yield server
    server.stop()


def endpoint_of(server: EmbeddedS3) -> tuple[str, str, str]:
    return server.endpoint, server.access_key, server.secret_key


@pytest.fixture
def private_store(private_s3: EmbeddedS3) -> ObjectStore:
    """The store on this test's own S3 server (which the test may freeze or stop)."""
    return ObjectStore(make_client(*endpoint_of(private_s3), secure=False))


@contextmanager
def frozen(server: EmbeddedS3) -> Iterator[None]:
    """A blocked store: the server is stopped (SIGSTOP), so connections are accepted by
    the kernel but never answered, as with a hung or partitioned server."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.process.pid, signal.SIGCONT)


def catalog_versions(session: Session, bucket_id: int) -> set[str]:
    """The S3 version ids the catalog holds as present in a bucket."""
    from sqlalchemy import select

    from backup_operator.catalog.models import BackupObject, ObjectVersion

    query = (
        select(ObjectVersion.version_id)
        .join(BackupObject, BackupObject.id == ObjectVersion.object_id)
        .where(BackupObject.bucket_id == bucket_id, ObjectVersion.deleted_at.is_(None))
    )
    return set(session.scalars(query))


def digest(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def backup_file(client: TestClient):  # type: ignore[no-untyped-def]
    """Register `path` with `content` in a job and upload it unless it is a duplicate."""

    def backup(job_id: int, path: str, content: bytes) -> dict[str, object]:
        registered = client.post(
            "/files/",
            json={"job_id": job_id, "path": path, "size": len(content), "sha256": digest(content)},
        )
        assert registered.status_code == 201, registered.text
        file = dict(registered.json())
        if not file["is_duplicate"]:
            stored = client.put(f"/files/{file['id']}/content", content=content)
            assert stored.status_code == 201, stored.text
            file = dict(client.get(f"/files/{file['id']}").json())
        return file

    return backup


@pytest.fixture
def new_job(client: TestClient, bucket: dict[str, object]):  # type: ignore[no-untyped-def]
    def create(**fields: object) -> dict[str, object]:
        body = {
            "job_name": "job",
            "source_system": "/data",
            "bucket_id": bucket["id"],
            "source_type": "registered",
            **fields,
        }
        response = client.post("/backup-jobs/", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    return create


def back_up(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    source: Path,
    prefix: str = "host1",
    **options: object,
) -> tuple[int, JobStats]:
    """Run a directory backup to completion with the engine, as a worker would. Every
    file is its own object unless `pack_threshold` is given (tests/test_packs.py)."""
    options.setdefault("pack_threshold", 0)
    from backup_operator.catalog import jobs
    from backup_operator.engine.backup import Options, run_backup
    from backup_operator.services.units import unit_of_work

    with unit_of_work(sessions) as session:
        job = jobs.create_job(
            session, job_name="t", source_system=str(source), bucket_id=bucket_id, key_prefix=prefix
        )
        jobs.claim_job(session, job.id, worker_id="test-worker")
    stats = run_backup(sessions, store, job.id, lambda: None, Options(**options))  # type: ignore[arg-type]
    with unit_of_work(sessions) as session:
        jobs.finish_job(
            session, job.id, worker_id="test-worker", status=jobs.outcome(stats), stats=stats
        )
    return job.id, stats


def keep_newest_job(session: Session, bucket_id: int, source: Path, name: str = "newest") -> int:
    """A jobs policy keeping only the newest backup of `source`: its id."""
    from backup_operator.catalog.models import RetentionTarget
    from backup_operator.catalog.retention import create_policy

    policy = create_policy(
        session,
        name=name,
        rules={"keep_last": 1},
        target=RetentionTarget.JOBS,
        bucket_id=bucket_id,
        source_system=str(source),
    )
    session.commit()
    return policy.id


def versions_of_one_file(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    source: Path,
    count: int,
    prefix: str = "host1",
) -> None:
    """`count` backups of `source`, its app.yaml changed before each: as many versions."""
    for generation in range(count):
        write(source, "app.yaml", f"v{generation}".encode())
        back_up(sessions, store, bucket_id, source, prefix=prefix)


def write(root: Path, relative: str, content: bytes) -> Path:
    """Write a file of a test's source tree, making its folders."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real Kubernetes control plane (tests/apiserver.py), once per test session."""
    from apiserver import control_plane

    with control_plane(tmp_path_factory.mktemp("k8s")) as running:
        yield running


@pytest.fixture(scope="session")
def kubelet(cluster, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The stand-in kubelet (tests/kubelet.py) that runs the cluster's pods locally."""
    from kubelet import Kubelet

    running = Kubelet(cluster, tmp_path_factory.mktemp("kubelet")).start()
    yield running
    running.stop()


@pytest.fixture
def api(cluster, kubelet, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A namespace of this test's own on the real API server."""
    from operator_harness import KubeNamespace

    name = cluster.new_namespace()
    yield KubeNamespace(cluster, kubelet, name, tmp_path)
    cluster.drop_namespace(name)


@pytest.fixture
def op(api, tmp_path: Path, db_url: str, s3_endpoint: tuple[str, str, str]):  # type: ignore[no-untyped-def]
    """The real operator process, watching the test's namespace, on this test's catalog
    and S3."""
    from operator_harness import operator

    with operator(api, tmp_path, db_url, s3_endpoint) as running:
        yield running

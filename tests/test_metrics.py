"""Metrics from the catalog, as Prometheus scrapes them from the API (and the operator):
names, labels, values, bounded cardinality, and the object store's reachability."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.catalog import jobs
from backup_operator.catalog.models import BackupJob, JobStatus, RetentionRun
from backup_operator.catalog.stats import JobStats
from backup_operator.embedded import EmbeddedS3
from backup_operator.metrics import EXPORTED
from backup_operator.services.buckets import create_bucket
from backup_operator.services.units import unit_of_work
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore

from .conftest import back_up, make_settings, write


def scrape(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    found = [
        v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_backups_by_outcome_bytes_files_and_last_success_are_labelled_by_source(
    client: TestClient,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    source = tmp_path / "src"
    write(source, "a.txt", b"alpha")
    write(source, "copy.txt", b"alpha")
    first, _ = back_up(sessions, store, bucket.id, source)
    write(source, "b.txt", b"bravo")
    second, _ = back_up(sessions, store, bucket.id, source)
    with sessions() as session:  # as the operator records them: namespace and schedule
        session.execute(
            update(BackupJob)
            .where(BackupJob.id.in_([first, second]))
            .values(namespace="team-a", schedule="nightly")
        )
        failed = jobs.create_job(
            session, job_name="f", source_system="/elsewhere", bucket_id=bucket.id
        )
        jobs.claim_job(session, failed.id, worker_id="w")
        jobs.finish_job(session, failed.id, worker_id="w", status=JobStatus.FAILED, error="x")
        session.commit()
        session.add(RetentionRun(policy_name="ns/keep", actor="t", deleted=3, bytes_freed=99))
        session.add(RetentionRun(policy_name="ns/keep", actor="t", error="DeadlineExceeded: x"))
        session.add(RetentionRun(policy_name="ns/keep", actor="t"))  # still going
        session.commit()
        running = jobs.create_job(session, job_name="r", source_system="/busy", bucket_id=bucket.id)
        jobs.claim_job(session, running.id, worker_id="w")
        session.commit()

    samples = scrape(client)
    ours = {"namespace": "team-a", "source": str(source), "schedule": "nightly"}
    assert value(samples, "minio_backup_jobs_finished_total", **ours, outcome="completed") == 2
    assert (
        value(samples, "minio_backup_jobs_finished_total", source="/elsewhere", outcome="failed")
        == 1
    )
    assert value(samples, "minio_backup_bytes_total", **ours, kind="uploaded") == 10
    assert value(samples, "minio_backup_bytes_total", **ours, kind="deduplicated") == 5
    assert value(samples, "minio_backup_files_total", **ours, outcome="duplicate") == 1
    assert value(samples, "minio_backup_files_total", **ours, outcome="unchanged") == 2
    assert value(samples, "minio_backup_duration_seconds_count", **ours) == 2
    with sessions() as session:
        ended = session.get_one(BackupJob, second).completed_at
    assert (
        value(samples, "minio_backup_last_success_timestamp_seconds", **ours) == ended.timestamp()
    )
    assert value(samples, "minio_backup_retention_versions_deleted_total", policy="ns/keep") == 3
    assert value(samples, "minio_backup_retention_bytes_freed_total", policy="ns/keep") == 99
    assert (
        value(samples, "minio_backup_retention_runs_total", policy="ns/keep", outcome="finished")
        == 0
    )
    stopped = {"policy": "ns/keep", "outcome": "interrupted"}  # at once, not after an hour
    assert value(samples, "minio_backup_retention_runs_total", **stopped) == 1
    assert value(samples, "minio_backup_object_store_up") == 1
    assert value(samples, "minio_backup_catalog_rows", table="backup_jobs") >= 0
    # Plain objects here: what the bucket stores is the two distinct contents.
    assert value(samples, "minio_backup_bucket_bytes", bucket=bucket_name, kind="stored") == 10
    assert value(samples, "minio_backup_bucket_bytes", bucket=bucket_name, kind="logical") == 10
    assert value(samples, "minio_backup_jobs_running", source="/busy") == 1
    assert 0 <= value(samples, "minio_backup_job_heartbeat_age_seconds", source="/busy") < 60
    exported = {
        n.removesuffix(s)
        for n in samples
        for s in ("_bucket", "_count", "_sum", "")
        if n.endswith(s)
    }
    assert set(EXPORTED) <= exported


def test_label_sets_are_bounded(
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
) -> None:
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        for i in range(5):
            job = jobs.create_job(
                session, job_name="j", source_system=f"/src/{i}", bucket_id=bucket.id
            )
            jobs.claim_job(session, job.id, worker_id="w")
            jobs.finish_job(
                session, job.id, worker_id="w", status=JobStatus.COMPLETED, stats=JobStats()
            )
    settings: Settings = make_settings(db_url, *s3_endpoint, metrics_max_series=2)
    with TestClient(create_app(settings)) as client:
        samples = scrape(client)
    sources = {labels["source"] for labels, _ in samples["minio_backup_jobs_finished_total"]}
    assert len(sources) == 3 and "other" in sources
    assert (
        value(samples, "minio_backup_jobs_finished_total", source="other", outcome="completed") == 3
    )


def test_an_unreachable_object_store_is_a_zero(db_url: str, private_s3: EmbeddedS3) -> None:
    settings = make_settings(
        db_url, private_s3.endpoint, private_s3.access_key, private_s3.secret_key
    )
    with TestClient(create_app(settings)) as client:
        assert value(scrape(client), "minio_backup_object_store_up") == 1
        private_s3.stop()
        assert value(scrape(client), "minio_backup_object_store_up") == 0


def test_scrapes_within_the_max_age_share_one_aggregation_of_the_catalog(
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    from sqlalchemy import event

    # Long enough for a backup between two scrapes on a slow machine (one took 1.4 s).
    max_age = 5.0
    live = make_settings(db_url, *s3_endpoint, metrics_max_age_seconds=max_age)
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    write(tmp_path / "src", "a.txt", b"alpha")
    with TestClient(create_app(live)) as client:
        queries: list[str] = []
        engine = client.app.state.sessions.kw["bind"]  # type: ignore[attr-defined]
        event.listen(engine, "before_cursor_execute", lambda *a: queries.append(a[2]))
        before = scrape(client)
        aggregated = time.monotonic()
        asked = len(queries)
        assert asked > 0
        back_up(sessions, store, bucket.id, tmp_path / "src")
        again = scrape(client)  # within the max age: the same figures, no query
        assert time.monotonic() - aggregated < max_age, "the backup outlasted the max age"
        assert len(queries) == asked
        finished = "minio_backup_jobs_finished_total"
        assert again.get(finished) == before.get(finished)
        time.sleep(max(0.0, aggregated + max_age + 0.1 - time.monotonic()))
        fresh = scrape(client)  # past it: the catalog is asked again
        assert len(queries) > asked
        assert value(fresh, finished, outcome="completed") == 1

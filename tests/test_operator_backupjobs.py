"""BackupJob resources driven through the real Kopf operator (see operator_harness)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import catalog_versions, endpoint_of, frozen, migrated_catalog, plain, write
from operator_harness import JOBS, KubeNamespace, Operator, example, operator, path_job, phase
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.catalog.models import (
    BackupJob,
    Bucket,
    File,
    JobStatus,
    RetentionRun,
)
from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3
from backup_operator.engine.backup import Options, run_backup
from backup_operator.operator.resources import FINISHED as FINISHED_PHASES
from backup_operator.services import buckets
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def test_a_backup_job_goes_pending_running_completed_and_lands_in_catalog_and_bucket(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    source = tmp_path / "src"
    write(source, "a.txt", b"alpha")
    write(source, "sub/b.txt", b"bravo")
    write(source, "sub/copy-of-a.txt", b"alpha")
    # Every file its own object (spec.packThreshold 0), to read the bucket's keys below.
    op.apply(path_job("nightly", source, bucket_name, packThreshold=0))

    done = op.wait_for(JOBS, "nightly", lambda o: phase(o) in {"Completed", "Failed"})
    status = done["status"]
    assert status["phase"] == "Completed", status
    assert (status["files"], status["uploaded"], status["deduplicated"]) == (3, 2, 1)
    assert status["bytesUploaded"] == 10 and status["bytesDeduplicated"] == 5
    assert status["dedupRatio"] == 0.333
    assert status["observedGeneration"] == 1
    assert condition(done, "Ready")["status"] == "True"
    assert condition(done, "Failed")["status"] == "False"
    assert status["startedAt"] and status["completedAt"]
    with sessions() as session:
        job = session.get_one(BackupJob, status["jobId"])
        assert job.external_uid == done["metadata"]["uid"]
        assert job.job_name == f"{op.namespace}/nightly" and job.source_system == str(source)
        assert job.pack_threshold == 0
        paths = set(session.scalars(select(File.path).where(File.job_id == job.id)))
    assert paths == {"a.txt", "sub/b.txt", "sub/copy-of-a.txt"}
    keys = {v.key for v in store.list_versions(bucket_name, "k/")}
    assert keys == {"k/a.txt", "k/sub/b.txt"}  # the duplicate was not uploaded again
    # Every transition is an Event (posted in the background), and kubectl shows it.
    op.wait_for_event("nightly", "Registered")
    op.wait_for_event("nightly", "Completed")
    assert "nightly" in op.kubectl("get", "backups")


def test_a_start_time_in_the_future_waits(op: Operator, tmp_path: Path, bucket_name: str) -> None:
    write(tmp_path / "src", "a", b"a")
    op.apply(path_job("later", tmp_path / "src", bucket_name, startAt="2099-01-01T00:00:00Z"))
    waiting = op.wait_for(JOBS, "later", lambda o: phase(o) is not None)
    assert phase(waiting) == "Pending"
    time.sleep(2)  # several poll intervals: it must still wait
    assert phase(op.get(JOBS, "later") or {}) == "Pending"
    # Before it starts, the start time may still move: now it runs.
    op.kubectl("patch", "bj", "later", "--type=merge", "-p", '{"spec":{"startAt":null}}')
    done = op.wait_for(JOBS, "later", lambda o: phase(o) == "Completed")
    assert condition(done, "SpecRejected")["status"] == "False"


def test_a_broken_source_ends_failed_with_a_reason(
    op: Operator, tmp_path: Path, bucket_name: str
) -> None:
    op.apply(path_job("broken", tmp_path / "missing", bucket_name))
    failed = op.wait_for(JOBS, "broken", lambda o: phase(o) in {"Completed", "Failed"})
    assert phase(failed) == "Failed"
    why = condition(failed, "Failed")
    assert why["status"] == "True" and why["reason"] == "SourceMissing"
    assert "missing" in why["message"]
    assert condition(failed, "Ready")["status"] == "False"


def test_a_job_failed_with_any_error_text_shows_it_with_a_valid_reason(
    op: Operator, tmp_path: Path, bucket_name: str, sessions: sessionmaker[Session]
) -> None:
    # An API user may fail a job with free text (PATCH /backup-jobs/{id}); a condition's
    # reason must be one word, or the API server refuses the whole status.
    write(tmp_path / "src", "a", b"a")
    op.apply(path_job("told", tmp_path / "src", bucket_name, startAt="2099-01-01T00:00:00Z"))
    waiting = op.wait_for(JOBS, "told", lambda o: phase(o) == "Pending")
    with unit_of_work(sessions) as session:
        jobs.set_status(
            session, waiting["status"]["jobId"], JobStatus.FAILED, error="the NAS is full"
        )
    failed = op.wait_for(JOBS, "told", lambda o: phase(o) == "Failed")
    why = condition(failed, "Failed")
    assert (why["reason"], why["message"]) == ("Failed", "the NAS is full")


def test_a_bad_bucket_name_is_refused_at_apply_naming_the_field(
    op: Operator, tmp_path: Path
) -> None:
    # S3's rules are written once (specs/buckets.py): the CRD carries those its pattern
    # cannot as CEL, so kubectl is told at once; the operator used to find it later.
    with pytest.raises(AssertionError) as refused:
        op.apply(path_job("bad-bucket", tmp_path, "my..bucket"))
    assert 'spec.bucket: Invalid value: "my..bucket"' in str(refused.value)
    assert "with no '..'" in str(refused.value)
    assert op.get(JOBS, "bad-bucket") is None


def test_a_bucket_of_another_namespace_is_refused_naming_the_field(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    with sessions() as session:  # another tenant backed up into it first
        buckets.bucket_named(session, store, bucket_name, create=True, namespace="another-team")
    write(tmp_path / "src", "a.txt", b"a")
    op.apply(path_job("intruder", tmp_path / "src", bucket_name))
    failed = op.wait_for(JOBS, "intruder", lambda o: phase(o) == "Failed")
    why = condition(failed, "Failed")
    assert why["reason"] == "InvalidSpec"
    assert why["message"].startswith("spec.bucket: ")
    assert "belongs to namespace 'another-team'" in why["message"]
    assert "jobId" not in failed["status"]  # nothing was registered, nothing uploaded
    assert not list(store.client.list_objects(bucket_name, recursive=True))


def test_a_spec_change_after_start_is_refused_with_a_condition(
    op: Operator, tmp_path: Path, bucket_name: str, sessions: sessionmaker[Session]
) -> None:
    write(tmp_path / "src", "a", b"a")
    op.apply(path_job("fixed", tmp_path / "src", bucket_name))
    done = op.wait_for(JOBS, "fixed", lambda o: phase(o) == "Completed")
    op.kubectl("patch", "bj", "fixed", "--type=merge", "-p", '{"spec":{"bucket":"elsewhere"}}')
    refused = op.wait_for(
        JOBS,
        "fixed",
        lambda o: any(c["type"] == "SpecRejected" for c in o["status"]["conditions"]),
    )
    why = condition(refused, "SpecRejected")
    assert why["status"] == "True" and why["reason"] == "Immutable"
    assert "spec.bucket" in why["message"]
    assert refused["status"]["observedGeneration"] == 2
    assert refused["status"]["phase"] == "Completed"  # the record is untouched
    with sessions() as session:
        job = session.get_one(BackupJob, done["status"]["jobId"])
        assert job.bucket_id == session.scalar(select(Bucket.id).where(Bucket.name == bucket_name))


def test_delete_keeps_the_catalog_records_unless_asked(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    write(tmp_path / "src", "kept.txt", b"kept")
    write(tmp_path / "other", "gone.txt", b"gone")
    plain = {"packThreshold": 0}  # every file its own object: the keys tell what stays
    op.apply(path_job("keep", tmp_path / "src", bucket_name, **plain))
    op.apply(path_job("drop", tmp_path / "other", bucket_name, deleteObjectsOnDelete=True, **plain))
    kept = op.wait_for(JOBS, "keep", lambda o: phase(o) == "Completed")
    dropped = op.wait_for(JOBS, "drop", lambda o: phase(o) == "Completed")
    assert kept["metadata"]["finalizers"]
    op.kubectl("delete", "bj", "keep", "drop", "--wait=false")
    for name in ("keep", "drop"):
        op.wait_gone(JOBS, name)
    with sessions() as session:
        keep_job = session.get_one(BackupJob, kept["status"]["jobId"])
        drop_job = session.get_one(BackupJob, dropped["status"]["jobId"])
        assert keep_job.forgotten_at is None
        assert drop_job.forgotten_at is not None  # records stay, marked forgotten
        assert session.scalars(select(File.path).where(File.job_id == drop_job.id)).all()
    keys = {v.key for v in store.list_versions(bucket_name, "k/")}
    assert keys == {"k/kept.txt"}


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_an_operator_stopped_or_killed_mid_job_resumes_it_saying_why(
    how: str, op: Operator, tmp_path: Path, bucket_name: str, sessions: sessionmaker[Session]
) -> None:
    source = tmp_path / "many"
    for i in range(3000):
        write(source, f"d{i % 30}/f{i}.bin", f"{i}".encode() * 1000)
    op.apply(path_job("long", source, bucket_name))
    running = op.wait_for(JOBS, "long", lambda o: phase(o) == "Running")
    job_id = running["status"]["jobId"]
    if how == "stopped":
        assert op.stop() == 0  # SIGTERM: a graceful stop hands the job back
        with sessions() as session:
            job = session.get_one(BackupJob, job_id)
            assert job.status.value == "pending" and job.worker_id is None  # resumable at once
    else:
        assert op.stop(signal.SIGKILL) == -signal.SIGKILL  # no word from the dead
        with sessions() as session:
            assert session.get_one(BackupJob, job_id).status.value == "running"
    op.start()
    done = op.wait_for(JOBS, "long", lambda o: phase(o) == "Completed", timeout=120)
    assert done["status"]["files"] == 3000 and done["status"]["attempts"] == 2
    why = op.wait_for_event("long", "Resumed")["message"]
    if how == "stopped":
        assert why.startswith("Interrupted: worker ") and why.endswith(
            " stopped; the job is resumed"
        )
    else:  # found silent for the heartbeat timeout (4 s here) by the new operator
        assert why.startswith("WorkerLost: no heartbeat for 4s from worker ")
        assert why.endswith("; resumed as attempt 2 of 3")
    with sessions() as session:
        job = session.get_one(BackupJob, job_id)
        assert job.attempts == 2 and job.error is None
        paths = session.scalars(select(File.path).where(File.job_id == job.id)).all()
    assert len(paths) == 3000


def test_a_backup_past_its_deadline_is_stopped_and_fails_even_on_a_hung_store(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    private_s3: EmbeddedS3,
    bucket_name: str,
    sessions: sessionmaker[Session],
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    with operator(api, tmp_path, db_url, endpoint_of(private_s3)) as op:
        later = path_job("bounded", tmp_path / "src", bucket_name, startAt="2099-01-01T00:00:00Z")
        later["spec"]["activeDeadlineSeconds"] = 2
        op.apply(later)
        op.wait_for(JOBS, "bounded", lambda o: phase(o) == "Pending")  # bucket made
        with frozen(private_s3):
            op.kubectl("patch", "bj", "bounded", "--type=merge", "-p", '{"spec":{"startAt":null}}')
            failed = op.wait_for(JOBS, "bounded", lambda o: phase(o) == "Failed", timeout=30)
        why = condition(failed, "Failed")
        assert why["reason"] == "DeadlineExceeded"
        assert why["message"] == (
            "DeadlineExceeded: unfinished 2s after it started (activeDeadlineSeconds); stopped"
        )
        op.wait_for_event("bounded", "Failed")
        with sessions() as session:
            job = session.get_one(BackupJob, failed["status"]["jobId"])
            assert job.status.value == "failed" and job.worker_id is None
            elapsed = (job.completed_at - job.started_at).total_seconds()
        assert 2 <= elapsed < 10  # failed at the deadline, not when the store came back


def test_a_deletion_held_by_a_hung_store_is_let_go_at_its_deadline_saying_why(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    private_s3: EmbeddedS3,
    private_store: ObjectStore,
    bucket_name: str,
    sessions: sessionmaker[Session],
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    write(tmp_path / "src", "b.txt", b"b")
    s3 = endpoint_of(private_s3)
    with operator(api, tmp_path, db_url, s3, DELETION_DEADLINE_SECONDS="3") as op:
        op.apply(path_job("doomed", tmp_path / "src", bucket_name, deleteObjectsOnDelete=True))
        done = op.wait_for(JOBS, "doomed", lambda o: phase(o) == "Completed")
        with frozen(private_s3):
            began = time.monotonic()
            op.kubectl("delete", "bj", "doomed", "--wait=false")
            op.wait_gone(JOBS, "doomed", timeout=30)
            waited = time.monotonic() - began
            why = op.wait_for_event("doomed", "DeletionIncomplete")["message"]
        assert 3 <= waited < 15
        assert why.startswith("gave up after 3s (DELETION_DEADLINE_SECONDS): unfinished after")
        assert f"from bucket {bucket_name}" in why

        # Nothing is lost or misrecorded: what the store still holds, the catalog does too.
        def settled() -> bool | None:
            with sessions() as session:
                run = session.scalars(
                    select(RetentionRun).where(
                        RetentionRun.actor == f"kubernetes:{op.namespace}/doomed"
                    )
                ).one()
                return bool(run.finished_at or run.error) or None

        op.eventually(settled, "the abandoned deletion to stop")
        with sessions() as session:
            bucket_id = session.get_one(BackupJob, done["status"]["jobId"]).bucket_id
            assert catalog_versions(session, bucket_id) == {
                v.version_id for v in private_store.list_versions(bucket_name, "")
            }


def test_a_backup_missing_files_ends_partially_failed_and_says_which(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    manifest = example("backupjob-pvc.yaml")
    manifest["spec"].update(bucket=bucket_name, startAt="2099-01-01T00:00:00Z")
    op.apply(manifest)
    name = manifest["metadata"]["name"]
    started = op.wait_for(JOBS, name, lambda o: phase(o) == "Pending")
    job_id = started["status"]["jobId"]
    # What a pod does, in this process (so no pod is started: the job is not due), with
    # a file vanishing between listing and reading (as root, nothing else makes a file
    # unreadable here): after the first batch, from the fifth (while the first is
    # recorded, the second is sent and the third read).
    volume = tmp_path / "volume"
    for i in range(25):
        write(volume, f"f{i:02}", str(i).encode())

    def vanish(_: dict[str, Any]) -> None:
        (volume / "f24").unlink(missing_ok=True)

    with unit_of_work(sessions) as session:
        jobs.claim_job(session, job_id, worker_id="pod")
    stats = run_backup(
        sessions,
        store,
        job_id,
        lambda: None,
        Options(source=str(volume), batch_files=5, progress=vanish),
    )
    with unit_of_work(sessions) as session:
        jobs.finish_job(session, job_id, worker_id="pod", status=jobs.outcome(stats), stats=stats)

    ended = op.wait_for(JOBS, name, lambda o: phase(o) in FINISHED_PHASES)
    assert phase(ended) == "PartiallyFailed"
    assert ended["status"]["failures"] == {
        "count": 1,
        "firstPaths": ["f24: No such file or directory"],
    }
    assert condition(ended, "Ready")["status"] == "False"
    failed = condition(ended, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "PartiallyFailed")
    assert "1 file could not be backed up" in failed["message"]
    op.wait_for_event(name, "PartiallyFailed")


def test_a_path_source_outside_the_source_roots_fails_naming_the_field(op: Operator) -> None:
    # SOURCE_ROOTS is the test's own directory; the operator's token is never a source.
    for name, path in [("etc", "/etc"), ("token", "/var/run/secrets/kubernetes.io")]:
        op.apply(path_job(name, Path(path), "some-bucket"))
        failed = op.wait_for(JOBS, name, lambda o: phase(o) == "Failed")
        why = condition(failed, "Failed")
        assert why["reason"] == "InvalidSpec" and why["message"].startswith("spec.source.path")
        assert failed["status"].get("jobId") is None  # nothing was recorded


def test_status_follows_the_catalog_as_it_changes_not_at_the_poll_interval(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
    sessions: sessionmaker[Session],
) -> None:
    # Polling every 10 minutes: only the catalog's announcements can bring these changes
    # into status within the waits below.
    write(tmp_path / "src", "a.txt", b"a")
    with operator(api, tmp_path, db_url, s3_endpoint, OPERATOR_POLL_SECONDS="600") as op:
        op.apply(path_job("now", tmp_path / "src", bucket_name))
        done = op.wait_for(JOBS, "now", lambda o: phase(o) == "Completed", timeout=20)
        assert done["status"]["files"] == 1
        op.apply(path_job("later", tmp_path / "src", bucket_name, startAt="2099-01-01T00:00:00Z"))
        pending = op.wait_for(JOBS, "later", lambda o: phase(o) == "Pending")
        with sessions() as session:  # another client of the catalog (the API, the CLI)
            jobs.cancel_job(session, pending["status"]["jobId"])
            session.commit()
        cancelled = op.wait_for(JOBS, "later", lambda o: phase(o) == "Cancelled", timeout=20)
        assert condition(cancelled, "Ready")["status"] == "False"
        op.wait_for_event("later", "Cancelled")


def test_after_a_catalog_outage_status_follows_again_without_waiting_for_the_poll(
    api: KubeNamespace,
    tmp_path: Path,
    private_pg: EmbeddedPostgres,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
) -> None:
    url = migrated_catalog(private_pg)
    write(tmp_path / "src", "a.txt", b"a")
    later = path_job("later", tmp_path / "src", bucket_name, startAt="2099-01-01T00:00:00Z")
    with operator(api, tmp_path, url, s3_endpoint, OPERATOR_POLL_SECONDS="600") as op:
        op.apply(later)
        job_id = op.wait_for(JOBS, "later", lambda o: phase(o) == "Pending")["status"]["jobId"]
        private_pg.stop()
        time.sleep(3)  # the listener has lost its connection and retries
        private_pg.start()
        with psycopg.connect(plain(url)) as conn:  # as the API would, once the catalog is back
            conn.execute("UPDATE backup_jobs SET status = 'cancelled' WHERE id = %s", [job_id])
        op.wait_for(JOBS, "later", lambda o: phase(o) == "Cancelled", timeout=30)
        assert "Traceback" not in op.logs()
        assert op.logs().count("polling until the catalog is back") == 1  # said once

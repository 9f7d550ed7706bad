"""The operator process: peering between replicas, the liveness endpoint, metrics, jobs
left without a resource, and how status is patched."""

from __future__ import annotations

import copy
import urllib.request
from pathlib import Path

import jsonpatch
import kopf
from conftest import write
from operator_harness import JOBS, KubeNamespace, Operator, example, operator, phase
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.catalog.models import BackupJob, Runner
from backup_operator.embedded import free_port
from backup_operator.operator.status import patch_status
from backup_operator.services.buckets import create_bucket
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore


def test_replicas_peer_so_that_one_acts_and_the_other_pauses(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with operator(api, tmp_path / "a", db_url, s3_endpoint) as first:
        first.stop()
        first.apply(example("kopfpeering.yaml"))
        first.env["OPERATOR_PRIORITY"] = "100"
        first.start("--peering", "minio-backup-operator")
        # The first has announced itself before the second looks.
        peering = "kopf.dev/v1/kopfpeerings"
        first.wait_for(peering, "minio-backup-operator", lambda o: bool(o.get("status")))
        with operator(api, tmp_path / "b", db_url, s3_endpoint) as second:
            second.stop()
            second.env["OPERATOR_PRIORITY"] = "10"
            second.start("--peering", "minio-backup-operator")
            both = second.wait_for(
                peering, "minio-backup-operator", lambda o: len(o["status"]) == 2
            )
            assert sorted(p["priority"] for p in both["status"].values()) == [10, 100]
            write(tmp_path / "src", "a.txt", b"a")
            job = example("backupjob-path.yaml")
            job["spec"] = {"source": {"path": str(tmp_path / "src")}, "bucket": bucket_name}
            first.apply(job)
            first.wait_for(JOBS, job["metadata"]["name"], lambda o: phase(o) == "Completed")
            assert "Handler 'register' succeeded" in first.logs()
            assert "Handler 'register'" not in second.logs()


def fetch(url: str) -> str | None:
    """The body at `url`, or None while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_the_liveness_endpoint_answers(op: Operator) -> None:
    port = free_port()
    op.stop()
    op.start("--standalone", "--liveness", f"http://127.0.0.1:{port}/healthz")
    op.eventually(lambda: fetch(f"http://127.0.0.1:{port}/healthz"), "no liveness endpoint")


def test_the_operator_serves_catalog_metrics_and_schedule_intervals(op: Operator) -> None:
    port = free_port()
    op.stop()
    op.env["METRICS_PORT"] = str(port)
    op.start("--standalone")
    op.apply(example("backupschedule.yaml"))  # "0 2 * * *": a day apart

    def scraped() -> str | None:
        text = fetch(f"http://127.0.0.1:{port}/metrics")
        interval = f'minio_backup_schedule_interval_seconds{{namespace="{op.namespace}"'
        return text if text and interval in text else None

    text = op.eventually(scraped, "no schedule interval in the operator's metrics")
    assert (
        f'minio_backup_schedule_interval_seconds{{namespace="{op.namespace}",schedule="app-data-nightly"}} 86400.0'
        in text
    )
    assert "minio_backup_object_store_up 1.0" in text


def test_a_catalog_job_whose_backupjob_is_gone_is_cancelled_not_run(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    # As left behind when a deletion gave up at its deadline with the catalog down.
    write(tmp_path / "src", "a.txt", b"a")
    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        orphan = jobs.create_job(
            session,
            job_name=f"{op.namespace}/gone",
            source_system=str(tmp_path / "src"),
            bucket_id=bucket.id,
            runner=Runner.OPERATOR,
            external_uid="4b1c0c4e-0000-4000-8000-000000000000",
            namespace=op.namespace,
        ).id

    def ended() -> BackupJob | None:
        with sessions() as session:
            job = session.get_one(BackupJob, orphan)
            return job if job.status.finished else None

    job = op.eventually(ended, "the orphan to be dealt with")
    assert job.status.value == "cancelled"
    assert job.error == (
        f"ResourceGone: BackupJob {op.namespace}/gone (uid 4b1c0c4e-0000-4000-8000-000000000000) is gone"
    )
    assert list(store.list_versions(bucket_name, "")) == []  # nothing was backed up


def test_a_status_patch_from_a_stale_body_keeps_conditions_it_does_not_own() -> None:
    # A timer read the status before a change handler added SpecRejected; its update
    # must not drop it (a whole-list merge patch would), and its phase and conditions
    # land together, in one patch.
    fresh = {"status": {"phase": "Running", "conditions": [ready("False", "t0"), rejected()]}}
    patch = kopf.Patch(body=kopf.Body(fresh))
    patch_status(patch, {"phase": "Completed", "conditions": [ready("True", "t1")]})
    assert dict(patch) == {}  # nothing merge-patched on its own
    body = copy.deepcopy(fresh)
    jsonpatch.apply_patch(body, patch.as_json_patch(), in_place=True)
    assert body["status"] == {
        "phase": "Completed",
        "conditions": [ready("True", "t1"), rejected()],
    }
    # An unchanged condition keeps the time of its last transition: nothing is written.
    again = kopf.Patch(body=kopf.Body(body))
    patch_status(again, {"phase": "Completed", "conditions": [ready("True", "t2")]})
    assert again.as_json_patch() == []


def ready(status: str, since: str) -> dict[str, str]:
    return {"type": "Ready", "status": status, "lastTransitionTime": since}


def rejected() -> dict[str, str]:
    return {"type": "SpecRejected", "status": "False", "lastTransitionTime": "t0"}

"""PVC backups for real: the operator creates a batch Job, the Job controller of the real
kube-controller-manager makes its pods, the test kubelet (tests/kubelet.py) runs them as
this project's `backup --job` command with the env the pod names (Secrets resolved) and
the claim mapped to a local folder, and the Job controller decides Complete or Failed."""

from __future__ import annotations

import base64
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import write
from operator_harness import JOBS, KubeNamespace, Operator, example, operator, phase
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.models import BackupJob, BackupObject, File, Tag
from backup_operator.operator.workload import workload_failure

BATCH_JOBS = "batch/v1/jobs"


def prepare(
    api: KubeNamespace, s3: tuple[str, str, str], volume: Path, shared_catalog: str | None = None
) -> None:
    """What a namespace holds before a PVC backup: the claim (backed by `volume`), and
    the Secret of the store's credentials its pod reads (its catalog login, the
    operator makes for each job, or with AGENT_CATALOG_ACCESS=shared, `shared_catalog`)."""
    api.cluster.create(
        "v1/persistentvolumeclaims",
        {
            "metadata": {"name": "app-data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        api.name,
    )
    api.kubelet.provide_claim(api.name, "app-data", volume)
    if shared_catalog is not None:
        api.secret("minio-backup-operator-database", {"SQLALCHEMY_DATABASE_URL": shared_catalog})
    api.secret("minio-credentials", {"accessKey": s3[1], "secretKey": s3[2]})


def pvc_job(bucket: str, **spec: Any) -> dict[str, Any]:
    manifest = example("backupjob-pvc.yaml")
    manifest["spec"].update(bucket=bucket, **spec)
    return manifest


def pods_of(api: KubeNamespace, workload: str) -> dict[str, dict[str, Any]]:
    return {
        n: p
        for n, p in api.objects("v1/pods").items()
        if p["metadata"].get("labels", {}).get("job-name") == workload
    }


def finished_workload(op: Operator, name: str) -> dict[str, Any]:
    """The batch Job, once the Job controller has counted its pod's success."""

    def counted() -> dict[str, Any] | None:
        found = op.api.get(BATCH_JOBS, name)
        return found if found and found.get("status", {}).get("succeeded") else None

    found: dict[str, Any] = op.eventually(counted, f"batch Job {name} did not succeed")
    return found


def test_a_pvc_job_runs_as_a_batch_job_whose_pod_completes_it(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    sessions: sessionmaker[Session],
) -> None:
    volume = tmp_path / "volume"
    write(volume, "uploads/report.csv", b"a,b\n1,2\n")
    write(volume, "uploads/img/logo.png", b"\x89PNG")
    write(volume, "elsewhere.txt", b"not under the sub-path")
    prepare(op.api, s3_endpoint, volume)
    manifest = pvc_job(bucket_name)
    op.apply(manifest)
    name = manifest["metadata"]["name"]
    done = op.wait_for(JOBS, name, lambda o: phase(o) in {"Completed", "Failed"}, timeout=90)
    assert phase(done) == "Completed", done["status"]
    # Two small files: one pack, one upload.
    assert done["status"]["files"] == 2 and done["status"]["uploaded"] == 1
    assert done["status"]["tags"] == {"team": "platform"}

    workload = finished_workload(op, done["status"]["workload"])
    owner = workload["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("BackupJob", done["metadata"]["uid"])
    assert workload["spec"]["activeDeadlineSeconds"] == 21600  # Kubernetes enforces it too
    assert workload["status"]["succeeded"] == 1  # the Job controller's own verdict
    (pod,) = pods_of(op.api, workload["metadata"]["name"]).values()
    assert pod["status"]["phase"] == "Succeeded"
    container = pod["spec"]["containers"][0]
    job_id = done["status"]["jobId"]
    assert container["args"] == ["backup", "--job", str(job_id), "--source", "/source"]
    assert container["volumeMounts"][0] == {
        "name": "source",
        "mountPath": "/source",
        "readOnly": True,
        "subPath": "uploads",
    }
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "app-data",
        "readOnly": True,
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-credentials",
        "key": "accessKey",
    }
    # The catalog: a login of this job's own, from a Secret the operator made for it
    # (the namespace holds no Secret with the catalog's URL), gone once the job ended.
    login = env["SQLALCHEMY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert login["name"].startswith(workload["metadata"]["name"] + "-catalog-")
    made = op.api.get("v1/secrets", login["name"])
    assert made is not None and made["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]
    role = make_url(base64.b64decode(made["data"][login["key"]]).decode()).username
    assert role and role.startswith(f"backup_job_{job_id}_")
    with sessions() as session:
        assert not session.scalar(
            text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}
        )
    assert container["resources"] == manifest["spec"]["resources"]
    assert env["BACKUP_MEMORY_MIB"]["value"] == "512"  # half its 1Gi limit, for contents
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    with sessions() as session:
        recorded = session.get_one(BackupJob, job_id)
        assert recorded.source_system == f"pvc://{op.namespace}/app-data/uploads"
        assert recorded.active_deadline_seconds == 21600
        assert set(session.scalars(select(File.path).where(File.job_id == job_id))) == {
            "report.csv",
            "img/logo.png",
        }
        tagged = session.execute(
            select(BackupObject.is_pack, Tag.key, Tag.value)
            .join(Tag, Tag.object_id == BackupObject.id)
            .where(BackupObject.bucket_id == recorded.bucket_id)
        ).all()
    assert tagged == [(True, "team", "platform")]  # the spec's tags, on the pack it wrote

    # Deleting the BackupJob deletes its batch Job and pods: the garbage collector
    # follows the ownerReferences.
    op.kubectl("delete", "bj", name, "--wait=false")
    op.wait_gone(JOBS, name)
    op.eventually(lambda: not op.api.objects(BATCH_JOBS), "the batch Job was not collected")
    op.eventually(lambda: not pods_of(op.api, workload["metadata"]["name"]), "pods stayed")


def test_a_batch_job_that_fails_for_good_fails_the_backup_job(
    api: KubeNamespace,
    tmp_path: Path,
    bucket_name: str,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
) -> None:
    # The shared catalog Secret of AGENT_CATALOG_ACCESS=shared, holding no usable URL:
    # every pod fails before it reaches the catalog.
    prepare(api, s3_endpoint, tmp_path / "volume", shared_catalog="not-a-database-url")
    manifest = pvc_job(bucket_name)
    with operator(api, tmp_path, db_url, s3_endpoint, AGENT_CATALOG_ACCESS="shared") as op:
        _fails_for_good(op, manifest)


def _fails_for_good(op: Operator, manifest: dict[str, Any]) -> None:
    op.apply(manifest)
    name = manifest["metadata"]["name"]
    failed = op.wait_for(JOBS, name, lambda o: phase(o) in {"Completed", "Failed"}, timeout=120)
    assert phase(failed) == "Failed"
    why = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    # The Job controller's own reason, after the chart's default of 2 retries.
    assert why["reason"] == "BackoffLimitExceeded", why
    assert "backoff limit" in why["message"]
    workload = op.api.objects(BATCH_JOBS)[failed["status"]["workload"]]
    assert workload["status"]["failed"] == 3
    op.wait_for_event(name, "Failed")


def test_a_memory_limit_that_is_no_quantity_fails_naming_the_field(
    op: Operator, bucket_name: str
) -> None:
    manifest = pvc_job(bucket_name, resources={"limits": {"memory": "lots"}})
    op.apply(manifest)  # the CRD takes any string (int-or-string), as Kubernetes' own do
    name = manifest["metadata"]["name"]
    failed = op.wait_for(JOBS, name, lambda o: phase(o) == "Failed")
    why = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert why["reason"] == "InvalidSpec"
    assert why["message"] == "spec.resources.limits.memory: 'lots' is not a quantity"
    assert not op.api.objects(BATCH_JOBS)  # no pod was started


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["evicted", "killed"])
def test_a_backup_pod_stopped_mid_backup_is_retried_and_the_job_completes(
    how: signal.Signals,
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    sessions: sessionmaker[Session],
) -> None:
    volume = tmp_path / "volume"
    # Enough that the backup is seen under way (batches of 1,000 files take tens of ms).
    for i in range(6000):
        write(volume, f"uploads/d{i % 60}/f{i}.bin", f"{i}".encode() * 1000)
    prepare(op.api, s3_endpoint, volume)
    manifest = pvc_job(bucket_name)
    op.apply(manifest)
    name = manifest["metadata"]["name"]
    running = op.wait_for(JOBS, name, lambda o: phase(o) == "Running", timeout=60)
    job_id = running["status"]["jobId"]

    def under_way() -> bool:  # some files recorded, most still to do
        with sessions() as session:
            done = session.scalar(select(func.count()).where(File.job_id == job_id)) or 0
        return 0 < done < 6000

    op.eventually(under_way, "the backup did not get under way", timeout=60)
    (process,) = op.api.kubelet.running(op.namespace).values()
    os.killpg(process.pid, how)
    done = op.wait_for(JOBS, name, lambda o: phase(o) in {"Completed", "Failed"}, timeout=180)
    assert phase(done) == "Completed", done["status"]
    assert done["status"]["files"] == 6000 and done["status"]["attempts"] == 2
    workload = finished_workload(op, running["status"]["workload"])
    # The stopped pod failed (SIGTERM: exit 143, not 0), so the Job controller ran another.
    assert (workload["status"].get("failed"), workload["status"].get("succeeded")) == (1, 1)
    pods = pods_of(op.api, workload["metadata"]["name"]).values()
    codes = sorted(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods
    )
    assert codes == [0, 128 + how]
    with sessions() as session:
        job = session.get_one(BackupJob, done["status"]["jobId"])
        assert job.attempts == 2
        assert len(session.scalars(select(File.path).where(File.job_id == job.id)).all()) == 6000


def test_a_batch_job_that_succeeded_without_finishing_the_backup_says_so() -> None:
    # What the Job controller reports for a Job whose pod exited 0 (as evicted pods did
    # before they exited 143): the BackupJob fails with this reason instead of waiting.
    job = {
        "metadata": {"name": "backup-x-1"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
    }
    assert workload_failure(job) == (
        "WorkloadEndedEarly: batch Job backup-x-1 succeeded, "
        "but its backup did not finish in the catalog"
    )
    assert workload_failure({"metadata": {"name": "x"}, "status": {"active": 1}}) is None

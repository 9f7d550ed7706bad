"""A policy or a job with extreme values fails only itself: the scheduler goes on with
other jobs, other buckets' backups and policies are unaffected (real PostgreSQL and S3)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from backup_operator.api.app import create_app
from backup_operator.settings import Settings

from .conftest import write

INT64_MAX = 2**63 - 1


def wait_until_finished(client: TestClient, job_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/backup-jobs/{job_id}").json()
        if job["status"] not in ("pending", "running"):
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is still {job['status']}")


def test_extreme_policies_and_jobs_fail_only_themselves(
    settings: Settings, bucket_name: str, tmp_path: Path
) -> None:
    for i in range(20):
        write(tmp_path / "src", f"f{i}", f"healthy {i}".encode())
    live = settings.model_copy(
        update={"scheduler_enabled": True, "scheduler_interval_seconds": 0.1}
    )
    with TestClient(create_app(live)) as client:
        hostile_bucket = client.post(
            "/buckets/", json={"name": f"{bucket_name}-h", "object_lock": True}
        ).json()
        healthy_bucket = client.post("/buckets/", json={"name": bucket_name}).json()
        # Every number at the largest value the API takes.
        hostile_policies = [
            client.post(
                "/retention-policies/",
                json={
                    "name": "hostile-versions",
                    "bucket_id": hostile_bucket["id"],
                    "keep_last": INT64_MAX,
                    "max_age_days": INT64_MAX,
                    "min_versions": INT64_MAX,
                    "max_age": "9999999y",
                    "lock_mode": "GOVERNANCE",
                    "lock_days": 36500,
                    "legal_hold": True,
                    "rules": {"keep_within": "9999999y", "keep_hourly": INT64_MAX},
                },
            ),
            client.post(
                "/retention-policies/",
                json={
                    "name": "hostile-jobs",
                    "target": "jobs",
                    "bucket_id": hostile_bucket["id"],
                    "source_system": str(tmp_path / "src"),
                    "keep_min_successful": INT64_MAX,
                    "rules": {"keep_within_daily": "9999999y", "keep_yearly": INT64_MAX},
                },
            ),
        ]
        for created in hostile_policies:
            assert created.status_code == 201, created.json()
        healthy_policy = client.post(
            "/retention-policies/",
            json={"name": "healthy", "bucket_id": healthy_bucket["id"], "keep_last": 1},
        ).json()

        def job(name: str, bucket: dict, source: Path, **extra: object) -> int:
            created = client.post(
                "/backup-jobs/",
                json={
                    "job_name": name,
                    "source_system": str(source),
                    "bucket_id": bucket["id"],
                    **extra,
                },
            )
            assert created.status_code == 201, created.json()
            return int(created.json()["id"])

        # Claimed first (the earliest start): a source that is no directory, the longest
        # deadline, the earliest time; then a backup under the 100-year lock.
        doomed = job(
            "doomed",
            healthy_bucket,
            tmp_path / "src" / "f0",
            start_time="0001-01-01T00:00:00Z",
            active_deadline_seconds=2**31 - 1,
        )
        locked = job("locked", hostile_bucket, tmp_path / "src", start_time="0002-01-01T00:00:00Z")
        healthy = job("healthy", healthy_bucket, tmp_path / "src")

        assert wait_until_finished(client, doomed)["status"] == "failed"
        locked_job = wait_until_finished(client, locked)
        healthy_job = wait_until_finished(client, healthy)
        assert healthy_job["status"] == "completed", healthy_job["error"]
        assert healthy_job["stats"]["new"] == 20
        # The hostile bucket's policy governs only that bucket: its backup fails or
        # succeeds on its own account, with its reason, never with a server error.
        assert locked_job["status"] in ("completed", "failed"), locked_job
        assert client.get("/backup-jobs/", params={"status": "running"}).json() == []

        for policy in [p.json() for p in hostile_policies] + [healthy_policy]:
            for action in ("dry-run", "apply"):
                answer = client.post(f"/retention-policies/{policy['id']}/{action}")
                assert answer.status_code < 500, (policy["name"], action, answer.json())
        applied = client.post(f"/retention-policies/{healthy_policy['id']}/apply")
        assert applied.status_code == 200, applied.json()

        # A second healthy backup after all of it: still runs and dedups.
        again = job("healthy-again", healthy_bucket, tmp_path / "src")
        again_job = wait_until_finished(client, again)
        assert again_job["status"] == "completed", again_job["error"]
        assert again_job["stats"]["unchanged"] == 20
        restored = client.post(
            f"/backup-jobs/{again}/restore", json={"target": str(tmp_path / "restored")}
        )
        assert restored.status_code == 200, restored.json()
        assert (tmp_path / "restored" / "f7").read_bytes() == b"healthy 7"

"""Backup jobs: the original API's calls unchanged, filters, lifecycle and cancel."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog import jobs
from backup_operator.catalog.stats import JobStats
from backup_operator.services.units import unit_of_work

LEGACY_JOB = {
    "job_name": "Daily Backup",
    "source_system": "/path/to/backup/source",
    "start_time": "2025-05-07T12:00:00",
    "bucket_id": 1,
}


def test_the_original_calls_work_unchanged(client: TestClient, bucket: dict) -> None:
    assert bucket["id"] == 1  # a fresh catalog: bucket 1 exists, as the original docs assume
    created = client.post("/backup-jobs/", json=LEGACY_JOB)
    assert created.status_code == 201
    job = created.json()
    assert job["id"] == 1 and job["status"] == "pending"
    assert job["start_time"] == "2025-05-07T12:00:00Z"  # naive times are UTC

    fetched = client.get("/backup-jobs/1", follow_redirects=False)
    assert fetched.status_code == 200
    assert fetched.json()["job_name"] == "Daily Backup"

    latest = client.get("/backup-objects/latest/", follow_redirects=False)
    assert latest.status_code == 200
    assert latest.json() == []


def test_unknown_bucket_is_404_and_bad_time_is_422(client: TestClient) -> None:
    response = client.post("/backup-jobs/", json=LEGACY_JOB)
    assert response.status_code == 404
    assert response.json()["detail"][0]["loc"] == ["bucket_id"]
    bad = client.post("/backup-jobs/", json={**LEGACY_JOB, "start_time": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "start_time"]
    no_time = client.post("/backup-jobs/", json={**LEGACY_JOB, "active_deadline_seconds": 0})
    assert no_time.status_code == 422
    assert no_time.json()["detail"][0]["loc"] == ["body", "active_deadline_seconds"]


def test_a_deadline_is_recorded_with_the_job(client: TestClient, new_job) -> None:  # type: ignore[no-untyped-def]
    assert new_job(active_deadline_seconds=3600)["active_deadline_seconds"] == 3600
    assert new_job()["active_deadline_seconds"] is None  # no hidden default


def test_list_filters_by_status_and_bucket(client: TestClient, new_job, bucket_name: str) -> None:
    first, second = new_job(), new_job()
    other_bucket = client.post("/buckets/", json={"name": bucket_name + "-b"}).json()
    third = client.post("/backup-jobs/", json={**LEGACY_JOB, "bucket_id": other_bucket["id"]})
    assert client.post(f"/backup-jobs/{second['id']}/cancel").status_code == 200

    ids = lambda response: [j["id"] for j in response.json()]  # noqa: E731
    assert ids(client.get("/backup-jobs/", params={"status": "pending"})) == [
        first["id"],
        third.json()["id"],
    ]
    assert ids(client.get("/backup-jobs/", params={"status": "cancelled"})) == [second["id"]]
    assert ids(client.get("/backup-jobs/", params={"bucket_id": other_bucket["id"]})) == [
        third.json()["id"]
    ]
    assert client.get("/backup-jobs/", params={"status": "bogus"}).status_code == 422


def test_lifecycle_moves_forward_only(client: TestClient, job: dict) -> None:
    url = f"/backup-jobs/{job['id']}"
    running = client.patch(url, json={"status": "running"})
    assert running.status_code == 200
    assert running.json()["started_at"] is not None
    done = client.put(f"{url}/status", json={"status": "completed"})
    assert done.json()["status"] == "completed" and done.json()["completed_at"] is not None
    back = client.patch(url, json={"status": "running"})
    assert back.status_code == 409
    assert back.json()["detail"][0]["loc"] == ["status"]
    assert client.post(f"{url}/cancel").status_code == 409
    assert client.get(url).json()["status"] == "completed"


def test_cancel_a_pending_job(client: TestClient, job: dict) -> None:
    response = client.post(f"/backup-jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert client.get("/backup-jobs/999").status_code == 404


def test_a_partially_failed_job_lists_its_failures_page_by_page(
    client: TestClient, job: dict, sessions: sessionmaker[Session]
) -> None:
    with unit_of_work(sessions) as session:
        jobs.claim_job(session, job["id"], worker_id="w")
        jobs.record_failures(
            session, job["id"], [(f"dir/f{i}", "unreadable", "Permission denied") for i in range(5)]
        )
        session.commit()
        jobs.finish_job(
            session,
            job["id"],
            worker_id="w",
            status=jobs.outcome(JobStats(failed_files=5)),
            stats=JobStats(failed_files=5),
        )
    assert client.get(f"/backup-jobs/{job['id']}").json()["status"] == "partially_failed"
    listed = client.get("/backup-jobs/", params={"status": "partially_failed"}).json()
    assert [j["id"] for j in listed] == [job["id"]]
    first = client.get(f"/backup-jobs/{job['id']}/failures", params={"limit": 3})
    assert [f["path"] for f in first.json()] == ["dir/f0", "dir/f1", "dir/f2"]
    assert first.json()[0]["reason"] == "Permission denied"
    rest = client.get(
        f"/backup-jobs/{job['id']}/failures",
        params={"limit": 3, "after": first.headers["X-Next-After"]},
    )
    assert [f["path"] for f in rest.json()] == ["dir/f3", "dir/f4"]
    assert client.get("/backup-jobs/999999/failures").status_code == 404

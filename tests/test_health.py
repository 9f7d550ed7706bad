"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz/")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "object_store": "ok"}


def test_metrics_count_requests_by_route_template(client: TestClient, bucket: dict) -> None:
    client.get(f"/buckets/{bucket['id']}")
    client.get("/buckets/424242")
    text = client.get("/metrics").text
    assert (
        'backup_api_requests_total{method="GET",route="/buckets/{bucket_id}",status="200"}' in text
    )
    assert 'route="/buckets/{bucket_id}",status="404"' in text
    assert "backup_api_request_duration_seconds_bucket" in text


def test_openapi_documents_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/buckets",
        "/backup-jobs/{job_id}",
        "/backup-objects/latest",
        "/files/batch",
        "/retention-policies/{policy_id}/dry-run",
        "/backup-objects/{object_id}/tags",
    ]:
        assert path in paths
    assert client.get("/docs").status_code == 200

"""Bearer tokens: read-only and read-write; health endpoints stay open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from backup_operator.api.app import create_app
from backup_operator.settings import LOOPBACK, Settings

from .conftest import serving


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    locked = settings.model_copy(
        update={
            "api_tokens": Settings(api_tokens="rw-token").api_tokens,
            "api_read_only_tokens": Settings(
                api_read_only_tokens="ro-1, ro-2"
            ).api_read_only_tokens,
        }
    )
    with TestClient(create_app(locked)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_endpoint_but_health_needs_a_token(secured: TestClient) -> None:
    for path in ["/buckets/", "/backup-jobs/1", "/backup-objects/latest/", "/metrics", "/docs"]:
        response = secured.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert secured.get("/buckets/", headers=bearer("wrong")).status_code == 401
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200


def test_read_only_tokens_read_and_write_tokens_write(
    secured: TestClient, bucket_name: str
) -> None:
    assert secured.get("/buckets/", headers=bearer("ro-2")).status_code == 200
    assert secured.get("/metrics", headers=bearer("ro-2")).status_code == 200  # Prometheus
    refused = secured.post("/buckets/", json={"name": bucket_name}, headers=bearer("ro-1"))
    assert refused.status_code == 403
    assert secured.get("/buckets/", headers=bearer("ro-1")).json() == []
    created = secured.post("/buckets/", json={"name": bucket_name}, headers=bearer("rw-token"))
    assert created.status_code == 201


def test_without_tokens_the_api_binds_to_loopback_only() -> None:
    assert Settings(api_host="0.0.0.0").bind_host == LOOPBACK
    assert Settings(api_host="0.0.0.0", api_tokens="t").bind_host == "0.0.0.0"


def test_two_authorization_headers_are_refused(secured: TestClient) -> None:
    response = secured.get(
        "/buckets/",
        headers=[("Authorization", "Bearer ro-1"), ("Authorization", "Bearer rw-token")],
    )
    assert response.status_code == 400
    assert response.json()["detail"][0] == {
        "loc": ["header", "authorization"],
        "msg": "more than one Authorization header",
        "type": "bad_request",
    }


def test_a_token_in_a_query_string_never_reaches_the_access_log(settings: Settings) -> None:
    import logging

    import httpx

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    keep = Keep()
    try:
        with serving(create_app(settings)) as base:
            logging.getLogger("uvicorn.access").addHandler(keep)
            query = "limit=5&access_token=s3cr3t-value&api_key=k3y-value"
            httpx.get(f"{base}/buckets/?{query}", timeout=10)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(keep)
    (line,) = [line for line in lines if "/buckets/" in line]
    assert "s3cr3t-value" not in line and "k3y-value" not in line
    assert "/buckets/?limit=5&access_token=***&api_key=***" in line

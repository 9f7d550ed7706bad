"""Buckets through the API, checked against the real S3 server."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backup_operator.storage import ObjectStore


def test_create_bucket_makes_a_versioned_bucket(
    client: TestClient, store: ObjectStore, bucket_name: str
) -> None:
    response = client.post("/buckets/", json={"name": bucket_name})
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == bucket_name and isinstance(body["id"], int)
    assert store.client.bucket_exists(bucket_name)
    assert store.client.get_bucket_versioning(bucket_name).status == "Enabled"
    assert client.get(f"/buckets/{body['id']}").json()["name"] == bucket_name


def test_object_lock_on_request(client: TestClient, store: ObjectStore, bucket_name: str) -> None:
    response = client.post("/buckets/", json={"name": bucket_name, "object_lock": True})
    assert response.status_code == 201
    assert response.json()["object_lock"] is True
    assert store.client.get_object_lock_config(bucket_name) is not None


def test_duplicate_name_is_409_naming_the_field(client: TestClient, bucket_name: str) -> None:
    assert client.post("/buckets/", json={"name": bucket_name}).status_code == 201
    response = client.post("/buckets/", json={"name": bucket_name})
    assert response.status_code == 409
    assert response.json()["detail"][0]["loc"] == ["name"]


def test_invalid_name_is_422_and_creates_nothing(client: TestClient, store: ObjectStore) -> None:
    for name in ["UPPER", "ab", "under_score", "-dash"]:
        response = client.post("/buckets/", json={"name": name})
        assert response.status_code == 422, name
        assert response.json()["detail"][0]["loc"] == ["name"]
    assert client.get("/buckets/").json() == []
    missing_field = client.post("/buckets/", json={})
    assert missing_field.status_code == 422
    assert missing_field.json()["detail"][0]["loc"] == ["body", "name"]


def test_get_unknown_bucket_is_404(client: TestClient) -> None:
    response = client.get("/buckets/999")
    assert response.status_code == 404
    assert response.json()["detail"][0] == {
        "loc": ["bucket_id"],
        "msg": "bucket 999 not found",
        "type": "not_found",
    }


def test_list_is_paginated_in_a_stable_order(client: TestClient, bucket_name: str) -> None:
    names = [f"{bucket_name}-{i}" for i in range(5)]
    for name in names:
        assert client.post("/buckets", json={"name": name}).status_code == 201
    seen: list[str] = []
    url = "/buckets/?limit=2"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [b["name"] for b in response.json()]
        pages += 1
        link = response.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else ""
    assert seen == names
    assert pages == 3
    second = client.get("/buckets/", params={"limit": 2, "after": 0})
    assert second.headers["x-next-after"] == str(client.get("/buckets/").json()[1]["id"])


def test_delete_empty_bucket(client: TestClient, store: ObjectStore, bucket: dict) -> None:
    assert client.delete(f"/buckets/{bucket['id']}").status_code == 204
    assert client.get(f"/buckets/{bucket['id']}").status_code == 404
    assert not store.client.bucket_exists(bucket["name"])


def test_bucket_with_objects_is_kept_unless_forced(
    client: TestClient, store: ObjectStore, bucket: dict, job: dict, backup_file
) -> None:
    backup_file(job["id"], "etc/hosts", b"127.0.0.1 localhost\n")
    refused = client.delete(f"/buckets/{bucket['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"][0]["loc"] == ["force"]
    assert store.client.bucket_exists(bucket["name"])
    assert client.get("/backup-objects/").json() != []

    assert client.delete(f"/buckets/{bucket['id']}?force=true").status_code == 204
    assert not store.client.bucket_exists(bucket["name"])
    assert client.get("/backup-objects/").json() == []
    assert client.get(f"/backup-jobs/{job['id']}").status_code == 404

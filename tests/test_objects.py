"""Objects and versions against real S3 versioning."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backup_operator.storage import ObjectStore


def test_changed_file_becomes_a_new_version_of_the_same_key(
    client: TestClient, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    first = backup_file(new_job(key_prefix="host1")["id"], "etc/app.conf", b"v1")
    second = backup_file(new_job(key_prefix="host1")["id"], "etc/app.conf", b"v2")
    objects = client.get("/backup-objects/").json()
    assert [o["key"] for o in objects] == ["host1/etc/app.conf"]
    object_id = objects[0]["id"]

    versions = client.get(f"/backup-objects/{object_id}/versions").json()
    assert [v["id"] for v in versions] == [first["object_version_id"], second["object_version_id"]]
    in_store = client.get(f"/backup-objects/{object_id}/store-versions").json()
    assert {v["version_id"] for v in in_store} == {v["version_id"] for v in versions}
    assert [v["is_latest"] for v in in_store] == [True, False]

    latest = client.get("/backup-objects/latest/").json()
    assert len(latest) == 1
    assert latest[0]["latest_version"]["version_id"] == versions[1]["version_id"]
    body = store.get(bucket["name"], "host1/etc/app.conf", versions[0]["version_id"])
    assert body.read() == b"v1"


def test_latest_is_paginated_per_object(client: TestClient, job: dict, backup_file) -> None:
    for i in range(5):
        backup_file(job["id"], f"file{i}", f"content {i}".encode())
    page = client.get("/backup-objects/latest/", params={"limit": 3})
    assert [o["key"] for o in page.json()] == ["file0", "file1", "file2"]
    rest = client.get(
        "/backup-objects/latest/", params={"limit": 3, "after": page.headers["x-next-after"]}
    )
    assert [o["key"] for o in rest.json()] == ["file3", "file4"]
    assert "link" not in rest.headers


def test_delete_one_version_by_id(
    client: TestClient, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    backup_file(new_job()["id"], "data.bin", b"old")
    backup_file(new_job()["id"], "data.bin", b"new")
    object_id = client.get("/backup-objects/").json()[0]["id"]
    old, new = client.get(f"/backup-objects/{object_id}/versions").json()

    got = client.get(f"/backup-objects/{object_id}/versions/{old['version_id']}")
    assert got.status_code == 200 and got.json()["sha256"] == old["sha256"]
    deleted = client.delete(f"/backup-objects/{object_id}/versions/{old['version_id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None

    assert [v.version_id for v in store.list_versions(bucket["name"])] == [new["version_id"]]
    live = client.get(f"/backup-objects/{object_id}/versions").json()
    assert [v["version_id"] for v in live] == [new["version_id"]]
    everything = client.get(f"/backup-objects/{object_id}/versions?include_deleted=true").json()
    assert len(everything) == 2
    again = client.delete(f"/backup-objects/{object_id}/versions/{old['version_id']}")
    assert again.status_code == 409
    unknown = client.delete(f"/backup-objects/{object_id}/versions/nope")
    assert unknown.status_code == 404 and unknown.json()["detail"][0]["loc"] == ["version_id"]


def test_content_of_duplicates_cannot_be_deleted(
    client: TestClient, store: ObjectStore, bucket: dict, job: dict, backup_file
) -> None:
    backup_file(job["id"], "a", b"shared")
    backup_file(job["id"], "b", b"shared")
    object_id = client.get("/backup-objects/").json()[0]["id"]
    version = client.get(f"/backup-objects/{object_id}/versions").json()[0]
    refused = client.delete(f"/backup-objects/{object_id}/versions/{version['version_id']}")
    assert refused.status_code == 409
    assert len(list(store.list_versions(bucket["name"]))) == 1


def test_unknown_object_is_404(client: TestClient) -> None:
    for url in ["/backup-objects/42", "/backup-objects/42/versions", "/backup-objects/42/tags"]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["detail"][0]["loc"] == ["object_id"]
    assert client.get("/backup-objects/latest/").status_code == 200


def test_a_download_link_names_the_public_endpoint_and_its_signature_holds_there(
    db_url: str, s3_endpoint: tuple[str, str, str], bucket_name: str
) -> None:
    # In a cluster MINIO_ENDPOINT is an in-cluster address a browser cannot reach; the
    # links are signed for MINIO_PUBLIC_ENDPOINT. Here both name one server: by address
    # and by name.
    import io
    from datetime import timedelta

    import httpx

    from backup_operator.settings import Settings

    from .conftest import make_settings

    endpoint, access, secret = s3_endpoint
    host, port = endpoint.rsplit(":", 1)
    public = f"{'localhost' if host != 'localhost' else '127.0.0.1'}:{port}"
    settings: Settings = make_settings(
        db_url, endpoint, access, secret, minio_public_endpoint=public
    )
    store = ObjectStore.from_settings(settings)
    store.create_bucket(bucket_name)
    version_id, _ = store.put(bucket_name, "a/b.txt", io.BytesIO(b"bytes"), 5)
    url = store.download_url(
        bucket_name, "a/b.txt", version_id, filename="b.txt", expires=timedelta(minutes=1)
    )
    assert url.startswith(f"http://{public}/{bucket_name}/a/b.txt?")
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == b"bytes"
    assert fetched.headers["content-disposition"] == "attachment; filename*=UTF-8''b.txt"
    assert (
        ObjectStore.from_settings(settings.model_copy(update={"minio_public_endpoint": None}))
        .download_url(
            bucket_name, "a/b.txt", version_id, filename="b.txt", expires=timedelta(minutes=1)
        )
        .startswith(f"http://{endpoint}/")
    )

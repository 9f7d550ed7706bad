"""Tags in the catalog and on the S3 object alike, within S3's limits."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from backup_operator.storage import ObjectStore


@pytest.fixture
def stored(client: TestClient, job: dict, backup_file) -> dict:
    backup_file(job["id"], "photos/cat.jpg", b"meow")
    obj = client.get("/backup-objects/").json()[0]
    obj["version_id"] = client.get(f"/backup-objects/{obj['id']}/versions").json()[0]["version_id"]
    return obj


def test_tags_are_written_to_s3_too(
    client: TestClient, store: ObjectStore, bucket: dict, stored: dict
) -> None:
    url = f"/backup-objects/{stored['id']}/tags"
    assert client.put(url, json={"tags": {"env": "prod", "team": "web"}}).status_code == 200
    assert client.patch(url, json={"tags": {"env": "staging"}}).json()["tags"] == {
        "env": "staging",
        "team": "web",
    }
    assert client.get(url).json() == {"tags": {"env": "staging", "team": "web"}}
    in_s3 = store.get_tags(bucket["name"], stored["key"], stored["version_id"])
    assert in_s3 == {"env": "staging", "team": "web"}

    assert client.delete(f"{url}/team").json() == {"tags": {"env": "staging"}}
    assert store.get_tags(bucket["name"], stored["key"], stored["version_id"]) == {"env": "staging"}
    assert client.delete(f"{url}/team").status_code == 404


def test_find_objects_by_tag(client: TestClient, job: dict, backup_file, stored: dict) -> None:
    backup_file(job["id"], "photos/dog.jpg", b"woof")
    dog = client.get("/backup-objects/", params={"key_prefix": "photos/dog"}).json()[0]
    client.put(f"/backup-objects/{stored['id']}/tags", json={"tags": {"kind": "cat"}})
    client.put(f"/backup-objects/{dog['id']}/tags", json={"tags": {"kind": "dog"}})
    by_key = client.get("/backup-objects/", params={"tag_key": "kind"}).json()
    assert [o["key"] for o in by_key] == ["photos/cat.jpg", "photos/dog.jpg"]
    by_value = client.get("/backup-objects/", params={"tag_key": "kind", "tag_value": "dog"})
    assert [o["key"] for o in by_value.json()] == ["photos/dog.jpg"]


@pytest.mark.parametrize(
    "tags",
    [
        {f"k{i}": "v" for i in range(11)},
        {"k" * 129: "v"},
        {"key": "v" * 257},
    ],
    ids=["eleven-tags", "long-key", "long-value"],
)
def test_beyond_s3_limits_is_422_and_changes_nothing(
    client: TestClient, store: ObjectStore, bucket: dict, stored: dict, tags: dict
) -> None:
    url = f"/backup-objects/{stored['id']}/tags"
    client.put(url, json={"tags": {"keep": "me"}})
    response = client.put(url, json={"tags": tags})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["tags"]
    assert client.get(url).json() == {"tags": {"keep": "me"}}
    assert store.get_tags(bucket["name"], stored["key"], stored["version_id"]) == {"keep": "me"}


def test_ten_tags_at_full_length_fit(client: TestClient, stored: dict) -> None:
    tags = {f"{i}".ljust(128, "k"): "v" * 256 for i in range(10)}
    response = client.put(f"/backup-objects/{stored['id']}/tags", json={"tags": tags})
    assert response.status_code == 200
    assert len(response.json()["tags"]) == 10

"""Tags in the catalog and on the S3 object alike, within S3's limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.models import Runner
from backup_operator.engine.verify import verify
from backup_operator.services.runner import EngineRunner
from backup_operator.services.scheduler import Scheduler
from backup_operator.storage import ObjectStore

from .conftest import write


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
        {"key": "a<b>"},
        {"owner?": "x"},
    ],
    ids=["eleven-tags", "long-key", "long-value", "value-charset", "key-charset"],
)
def test_beyond_s3_limits_is_422_and_changes_nothing(
    client: TestClient, store: ObjectStore, bucket: dict, stored: dict, tags: dict
) -> None:
    url = f"/backup-objects/{stored['id']}/tags"
    client.put(url, json={"tags": {"keep": "me"}})
    response = client.put(url, json={"tags": tags})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0].startswith("tags")
    assert client.get(url).json() == {"tags": {"keep": "me"}}
    assert store.get_tags(bucket["name"], stored["key"], stored["version_id"]) == {"keep": "me"}


def test_ten_tags_at_full_length_fit(client: TestClient, stored: dict) -> None:
    tags = {f"{i}".ljust(128, "k"): "v" * 256 for i in range(10)}
    response = client.put(f"/backup-objects/{stored['id']}/tags", json={"tags": tags})
    assert response.status_code == 200
    assert len(response.json()["tags"]) == 10


def test_a_jobs_tags_go_on_every_version_it_uploads_in_s3_and_the_catalog(
    client: TestClient,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket: dict,
    tmp_path: Path,
) -> None:
    write(tmp_path / "src", "a.txt", b"alpha")
    write(tmp_path / "src", "copy-of-a.txt", b"alpha")  # a duplicate: not uploaded
    write(tmp_path / "src", "b.txt", b"bravo")
    tags = {"team": "platform", "tier": "gold"}
    created = client.post(
        "/backup-jobs/",
        json={
            "job_name": "tagged",
            "source_system": str(tmp_path / "src"),
            "bucket_id": bucket["id"],
            "key_prefix": "t",
            "tags": tags,
            "pack_threshold": 0,  # each file its own object (packs: tests/test_packs.py)
        },
    )
    assert created.status_code == 201 and created.json()["tags"] == tags
    Scheduler(sessions, runner=EngineRunner(sessions, store), claims=Runner.SCHEDULER).run_once()
    assert client.get(f"/backup-jobs/{created.json()['id']}").json()["status"] == "completed"
    found = client.get("/backup-objects/", params={"tag_key": "tier", "tag_value": "gold"})
    objects = {o["key"]: o for o in found.json()}
    assert set(objects) == {"t/a.txt", "t/b.txt"}
    for key, obj in objects.items():
        assert client.get(f"/backup-objects/{obj['id']}/tags").json() == {"tags": tags}
        [version] = client.get(f"/backup-objects/{obj['id']}/versions").json()
        assert store.get_tags(bucket["name"], key, version["version_id"]) == tags


def test_tags_are_per_version_as_in_s3_and_verify_reports_their_drift(
    client: TestClient,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket: dict,
    tmp_path: Path,
) -> None:
    def backup(tags: dict[str, str]) -> None:
        created = client.post(
            "/backup-jobs/",
            json={
                "job_name": "j",
                "source_system": str(tmp_path / "src"),
                "bucket_id": bucket["id"],
                "tags": tags,
                "pack_threshold": 0,
            },
        ).json()
        Scheduler(sessions, runner=EngineRunner(sessions, store)).run_once()
        assert client.get(f"/backup-jobs/{created['id']}").json()["status"] == "completed"

    write(tmp_path / "src", "a.txt", b"v1")
    backup({"tier": "gold"})
    write(tmp_path / "src", "a.txt", b"v2")
    backup({})  # a new version without tags: in S3 the object's tags are gone
    [obj] = client.get("/backup-objects/").json()
    oldest, newest = sorted(
        client.get(f"/backup-objects/{obj['id']}/versions").json(), key=lambda v: v["id"]
    )
    assert store.get_tags(bucket["name"], "a.txt", newest["version_id"]) == {}
    assert store.get_tags(bucket["name"], "a.txt", oldest["version_id"]) == {"tier": "gold"}
    assert client.get(f"/backup-objects/{obj['id']}/tags").json() == {"tags": {}}
    assert client.get("/backup-objects/", params={"tag_key": "tier"}).json() == []
    with sessions() as session:
        assert verify(session, store, bucket["id"], checksum_all=True).clean

    # Tags changed behind the catalog's back: reported, and put back by repair.
    store.set_tags(bucket["name"], "a.txt", newest["version_id"], {"rogue": "yes"})
    with sessions() as session:
        drift = verify(session, store, bucket["id"], checksum_all=True)
        assert not drift.clean and [d[0] for d in drift.tag_drift] == ["a.txt"]
        assert verify(session, store, bucket["id"], checksum_all=True, repair=True).clean
    assert store.get_tags(bucket["name"], "a.txt", newest["version_id"]) == {}


def test_a_job_with_more_tags_than_s3_allows_is_refused_naming_the_field(
    client: TestClient, bucket: dict
) -> None:
    eleven = {f"k{i}": "v" for i in range(11)}
    response = client.post(
        "/backup-jobs/",
        json={"job_name": "j", "source_system": "/", "bucket_id": bucket["id"], "tags": eleven},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["tags"]
    assert client.get("/backup-jobs/").json() == []  # nothing half-made

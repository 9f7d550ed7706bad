"""File registration, search and duplicate detection (also under real concurrency)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.files import FileIn, register_files
from backup_operator.catalog.models import File
from backup_operator.services.units import unit_of_work
from backup_operator.storage import ObjectStore

from .conftest import digest


def test_same_content_is_a_duplicate_and_uploads_nothing(
    client: TestClient, store: ObjectStore, bucket: dict, job: dict, backup_file
) -> None:
    original = backup_file(job["id"], "a/report.pdf", b"quarterly numbers")
    assert original["is_duplicate"] is False and original["object_version_id"] is not None
    copy = backup_file(job["id"], "b/report-copy.pdf", b"quarterly numbers")
    assert copy["is_duplicate"] is True
    assert copy["canonical_file_id"] == original["id"]
    assert copy["object_version_id"] == original["object_version_id"]
    stored = [v.key for v in store.list_versions(bucket["name"])]
    assert stored == ["a/report.pdf"]
    again = client.put(f"/files/{copy['id']}/content", content=b"quarterly numbers")
    assert again.status_code == 409


def test_duplicate_registered_before_the_upload_gets_the_version_after(
    client: TestClient, job: dict
) -> None:
    content = b"x" * 100
    body = {"job_id": job["id"], "size": 100, "sha256": digest(content)}
    first = client.post("/files/", json={**body, "path": "one"}).json()
    second = client.post("/files/", json={**body, "path": "two"}).json()
    assert second["is_duplicate"] and second["object_version_id"] is None
    assert client.put(f"/files/{first['id']}/content", content=content).status_code == 201
    assert client.get(f"/files/{second['id']}").json()["object_version_id"] is not None


def test_batch_registration_and_search(client: TestClient, job: dict) -> None:
    files = [
        {"path": f"home/user{i % 3}/file{i}.txt", "size": 10 + i, "sha256": digest(bytes([i]))}
        for i in range(30)
    ]
    files.append({"path": "home/user0/again.txt", "size": 10, "sha256": digest(bytes([0]))})
    response = client.post("/files/batch", json={"job_id": job["id"], "files": files})
    assert response.status_code == 201
    registered = response.json()
    assert [f["path"] for f in registered] == [f["path"] for f in files]
    assert [f["is_duplicate"] for f in registered].count(True) == 1

    by_prefix = client.get("/files/", params={"path_prefix": "home/user1/", "limit": 1000}).json()
    assert {f["path"] for f in by_prefix} == {f"home/user1/file{i}.txt" for i in range(1, 30, 3)}
    by_sum = client.get("/files/", params={"sha256": digest(bytes([0]))}).json()
    assert [f["path"] for f in by_sum] == ["home/user0/file0.txt", "home/user0/again.txt"]
    by_job = client.get("/files/", params={"job_id": job["id"], "limit": 10})
    assert len(by_job.json()) == 10 and 'rel="next"' in by_job.headers["link"]
    like_chars = client.get("/files/", params={"path_prefix": "home/user_"}).json()
    assert like_chars == []  # '_' is not a wildcard


def test_retried_registration_is_idempotent_but_other_content_conflicts(
    client: TestClient, job: dict
) -> None:
    body = {"job_id": job["id"], "path": "db.dump", "size": 3, "sha256": digest(b"abc")}
    first = client.post("/files/", json=body)
    again = client.post("/files/", json=body)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = client.post("/files/", json={**body, "size": 4, "sha256": digest(b"abcd")})
    assert other.status_code == 409
    assert other.json()["detail"][0]["loc"] == ["path"]


def test_bad_input_names_the_field(client: TestClient, job: dict) -> None:
    bad_sum = client.post(
        "/files/", json={"job_id": job["id"], "path": "x", "size": 1, "sha256": "nothex"}
    )
    assert bad_sum.status_code == 422
    assert bad_sum.json()["detail"][0]["loc"] == ["body", "sha256"]
    negative = client.post(
        "/files/", json={"job_id": job["id"], "path": "x", "size": -1, "sha256": digest(b"")}
    )
    assert negative.json()["detail"][0]["loc"] == ["body", "size"]
    twice = client.post(
        "/files/batch",
        json={
            "job_id": job["id"],
            "files": [
                {"path": "same", "size": 0, "sha256": digest(b"")},
                {"path": "same", "size": 0, "sha256": digest(b"")},
            ],
        },
    )
    assert twice.status_code == 422 and twice.json()["detail"][0]["loc"] == ["files[1].path"]
    assert client.get("/files/").json() == []  # nothing half-registered
    assert client.get("/files/12345").status_code == 404


def test_finished_job_takes_no_files(client: TestClient, job: dict) -> None:
    client.post(f"/backup-jobs/{job['id']}/cancel")
    response = client.post(
        "/files/", json={"job_id": job["id"], "path": "x", "size": 0, "sha256": digest(b"")}
    )
    assert response.status_code == 409


def test_upload_must_match_the_registration(
    client: TestClient, store: ObjectStore, bucket: dict, job: dict
) -> None:
    file = client.post(
        "/files/", json={"job_id": job["id"], "path": "f", "size": 5, "sha256": digest(b"hello")}
    ).json()
    wrong = client.put(f"/files/{file['id']}/content", content=b"HELLO")
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["sha256"]
    assert list(store.list_versions(bucket["name"])) == []  # nothing left behind
    short = client.put(f"/files/{file['id']}/content", content=b"hell")
    assert short.status_code == 422
    assert client.get(f"/files/{file['id']}").json()["object_version_id"] is None


def test_duplicates_report(client: TestClient, job: dict, backup_file) -> None:
    for i in range(3):
        backup_file(job["id"], f"copy{i}", b"A" * 1000)
    backup_file(job["id"], "unique", b"B")
    backup_file(job["id"], "b1", b"C" * 10)
    backup_file(job["id"], "b2", b"C" * 10)
    groups = client.get("/files/duplicates/").json()
    assert [(g["size"], g["duplicates"], g["bytes_saved"]) for g in groups] == [
        (1000, 2, 2000),
        (10, 1, 10),
    ]
    summary = client.get("/files/duplicates/summary").json()
    assert summary == {"groups": 2, "duplicate_files": 3, "bytes_saved": 2010}


def test_concurrent_registrations_yield_one_canonical(
    sessions: sessionmaker[Session], client: TestClient, new_job
) -> None:
    """Many workers register the same new content at once, each in its own transaction."""
    workers = 8
    jobs = [new_job()["id"] for _ in range(workers)]
    content = FileIn(path="shared/blob.bin", size=4096, sha256=digest(b"race"))
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def register(job_id: int) -> None:
        try:
            with unit_of_work(sessions) as session:
                barrier.wait()
                register_files(session, job_id, [content])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=register, args=(job_id,)) for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sessions() as session:
        rows = session.scalars(select(File).where(File.sha256 == content.sha256)).all()
    assert len(rows) == workers
    canonical = [f for f in rows if not f.is_duplicate]
    assert len(canonical) == 1
    assert all(f.canonical_file_id == canonical[0].id for f in rows if f.is_duplicate)

"""Paths are absolute and confined: the API backs up only under SOURCE_ROOTS and
restores only under RESTORE_ROOTS (refusing restores when none is configured), the
operator reads path sources only under SOURCE_ROOTS, whatever `..` or symlinks say;
restored files get back the mode bits they were backed up with."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import back_up, make_settings, write
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.engine.restore import restore
from backup_operator.errors import Invalid
from backup_operator.services.buckets import create_bucket
from backup_operator.storage import ObjectStore


def error_of(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    return dict(item)


@pytest.fixture
def confined(db_url: str, s3_endpoint: tuple[str, str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(
        db_url,
        *s3_endpoint,
        source_roots=[tmp_path / "sources"],
        restore_roots=[tmp_path / "restores"],
    )
    with TestClient(create_app(settings)) as client:
        yield client


def job_body(bucket_id: int, source: str) -> dict[str, object]:
    return {"job_name": "j", "source_system": source, "bucket_id": bucket_id}


def test_sources_must_be_absolute_and_under_the_source_roots(
    confined: TestClient, bucket_name: str, tmp_path: Path
) -> None:
    bucket = confined.post("/buckets/", json={"name": bucket_name}).json()
    (tmp_path / "sources" / "app").mkdir(parents=True)
    (tmp_path / "sources" / "escape").symlink_to("/etc")
    relative = error_of(confined.post("/backup-jobs/", json=job_body(bucket["id"], "data")))
    assert relative["loc"] == ["source_system"] and "not an absolute path" in relative["msg"]
    for outside in ["/etc", f"{tmp_path}/sources/../../", f"{tmp_path}/sources/escape/ssh"]:
        refused = error_of(confined.post("/backup-jobs/", json=job_body(bucket["id"], outside)))
        assert refused["loc"] == ["source_system"] and "outside SOURCE_ROOTS" in refused["msg"]
    tokens = error_of(
        confined.post("/backup-jobs/", json=job_body(bucket["id"], "/var/run/secrets/x"))
    )
    assert "never backed up" in tokens["msg"]
    inside = confined.post("/backup-jobs/", json=job_body(bucket["id"], f"{tmp_path}/sources/app"))
    assert inside.status_code == 201
    assert [j["source_system"] for j in confined.get("/backup-jobs/").json()] == [
        f"{tmp_path}/sources/app"
    ]


def test_a_restore_through_the_api_needs_a_restore_root(
    db_url: str, s3_endpoint: tuple[str, str, str], tmp_path: Path
) -> None:
    settings = make_settings(db_url, *s3_endpoint, restore_roots=[])
    with TestClient(create_app(settings)) as client:
        refused = client.post("/backup-jobs/1/restore", json={"target": str(tmp_path / "out")})
    error = error_of(refused)
    assert error["loc"] == ["target"]
    assert "no RESTORE_ROOTS are configured (set RESTORE_ROOTS" in error["msg"]
    assert not (tmp_path / "out").exists()


def test_restores_write_only_under_the_restore_roots_and_keep_modes(
    confined: TestClient,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "sources" / "app"
    os.chmod(write(source, "run.sh", b"#!/bin/sh\n"), 0o750)
    os.chmod(write(source, "secret.key", b"k"), 0o600)
    os.chmod(write(source, "shared.txt", b"s"), 0o644)
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    job_id, _ = back_up(sessions, store, bucket.id, source)
    for target in ["relative/out", "/tmp/elsewhere", f"{tmp_path}/restores/../x", "/proc/self"]:
        error = error_of(confined.post(f"/backup-jobs/{job_id}/restore", json={"target": target}))
        assert error["loc"] == ["target"], error
    assert not (tmp_path / "x").exists()
    write(tmp_path / "restores", "a-file", b"x")
    not_a_dir = confined.post(
        f"/backup-jobs/{job_id}/restore", json={"target": str(tmp_path / "restores" / "a-file")}
    )
    assert "is not a directory" in error_of(not_a_dir)["msg"]

    done = confined.post(
        f"/backup-jobs/{job_id}/restore", json={"target": str(tmp_path / "restores" / "app")}
    )
    assert done.status_code == 200 and done.json()["files"] == 3, done.text
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "restores" / "app").iterdir()
    }
    assert modes == {"run.sh": 0o750, "secret.key": 0o600, "shared.txt": 0o644}


def test_the_console_is_not_confined_but_refuses_a_file_as_target(
    sessions: sessionmaker[Session], store: ObjectStore, bucket_name: str, tmp_path: Path
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    job_id, _ = back_up(sessions, store, bucket.id, tmp_path / "src")
    write(tmp_path, "plain-file", b"x")
    with sessions() as session:
        with pytest.raises(Invalid, match="is not a directory"):
            restore(session, store, job_id, tmp_path / "plain-file")
        assert restore(session, store, job_id, tmp_path / "anywhere").files == 1

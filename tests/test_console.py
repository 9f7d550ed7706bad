"""The console command end to end, a worker killed mid-job (kill -9) and resumed, and
backups and restores started through the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.catalog.models import BackupJob, BackupObject, File, JobStatus, ObjectVersion
from backup_operator.engine.backup import PIPELINE_DEPTH
from backup_operator.engine.packs import IN_FLIGHT
from backup_operator.engine.verify import verify
from backup_operator.services.runner import EngineRunner
from backup_operator.services.scheduler import Scheduler
from backup_operator.services.units import unit_of_work
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore


def console_env(db_url: str, s3: tuple[str, str, str]) -> dict[str, str]:
    endpoint, access, secret = s3
    return {
        **os.environ,
        "SQLALCHEMY_DATABASE_URL": db_url,
        "MINIO_ENDPOINT": endpoint,
        "MINIO_ACCESS_KEY": access,
        "MINIO_SECRET_KEY": secret,
        "LOG_LEVEL": "WARNING",
    }


def console(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backup_operator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def start_backup(
    env: dict[str, str],
    source: Path,
    bucket: str,
    batch_files: int,
    *options: str,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """`backup-operator backup SOURCE --bucket BUCKET` as a process of its own."""
    command = ["backup", str(source), "--bucket", bucket, "--batch-files", str(batch_files)]
    command += options
    return subprocess.Popen([sys.executable, "-m", "backup_operator", *command], env=env, **popen)


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        path = root / f"d{i % 20:02}" / f"f{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


def test_backup_show_restore_verify(
    db_url: str, s3_endpoint: tuple[str, str, str], bucket_name: str, tmp_path: Path
) -> None:
    env = console_env(db_url, s3_endpoint)
    make_tree(tmp_path / "src", 30, 1000)
    backed = console(env, "backup", str(tmp_path / "src"), "--bucket", bucket_name)
    assert backed.returncode == 0, backed.stderr
    result = json.loads(backed.stdout)
    assert result["status"] == "completed" and result["new"] == 30

    shown = console(env, "show", str(result["job_id"]))
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "completed"
    assert json.loads(shown.stdout)["stats"]["files_seen"] == result["files_seen"]

    target = str(tmp_path / "restored")
    restored = console(env, "restore", str(result["job_id"]), target)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["files"] == 30
    assert (tmp_path / "restored/d03/f00003.bin").read_bytes() == (
        tmp_path / "src/d03/f00003.bin"
    ).read_bytes()
    refused = console(env, "restore", str(result["job_id"]), target)
    assert refused.returncode == 1 and json.loads(refused.stdout)["refused_existing"] == 30

    checked = console(env, "verify", bucket_name, "--all")
    assert checked.returncode == 0 and json.loads(checked.stdout)["clean"] is True

    unknown = console(env, "show", "999")
    assert unknown.returncode == 1 and "backup job 999 not found" in unknown.stderr
    down = console({**env, "MINIO_ENDPOINT": "127.0.0.1:1"}, "verify", bucket_name)
    assert down.returncode == 3 and "unavailable" in down.stderr
    assert "Traceback" not in down.stderr


def stored_versions(session: Session) -> set[tuple[str, str]]:
    """(key, S3 version id) of every version the catalog has recorded."""
    rows = session.execute(
        select(BackupObject.key, ObjectVersion.version_id).join(
            ObjectVersion, ObjectVersion.object_id == BackupObject.id
        )
    )
    return {(key, version_id) for key, version_id in rows}


@pytest.mark.parametrize("pack_threshold", [0, 1024 * 1024], ids=["plain", "packs"])
def test_killed_worker_is_resumed_without_uploading_again(
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    pack_threshold: int,
) -> None:
    make_tree(tmp_path / "src", 3000, 4096)
    worker = start_backup(
        console_env(db_url, s3_endpoint),
        tmp_path / "src",
        bucket_name,
        250,
        "--pack-threshold",
        str(pack_threshold),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stored_files = 0
    deadline = time.monotonic() + 120
    with sessions() as session:
        while stored_files < 500:  # two batches recorded, uploads of the next under way
            assert worker.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline
            stored_files = (
                session.scalar(
                    select(func.count())
                    .select_from(File)
                    .where(File.object_version_id.is_not(None))
                )
                or 0
            )
            session.rollback()
            time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    with sessions() as session:
        stored_before = stored_versions(session)
        job = session.scalars(select(BackupJob)).one()
        assert job.status is JobStatus.RUNNING
    time.sleep(1.2)  # the dead worker's heartbeat goes stale
    # Read after that pause: a PUT whose body had reached the store before the kill is
    # still completed by it a moment later (seen once on a loaded machine).
    in_store_at_kill = {(v.key, v.version_id) for v in store.list_versions(bucket_name)}
    survivor = Scheduler(sessions, runner=EngineRunner(sessions, store), heartbeat_timeout=1)
    assert survivor.run_once()
    with sessions() as session:
        job = session.get_one(BackupJob, job.id)
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.attempts == 2 and job.stats.new == 3000
        assert session.scalar(select(func.count()).select_from(File)) == 3000
        in_store: dict[str, list[str]] = {}
        for version in store.list_versions(bucket_name):
            in_store.setdefault(version.key, []).append(version.version_id)
        for key, version_id in stored_before:
            assert in_store[key] == [version_id], f"{key} was uploaded again"
        recorded = stored_versions(session)
        # Each upload counted once across the two attempts: those the catalog records.
        assert job.stats.uploads == len(recorded)
        # What was uploaded and not recorded at the kill is left untracked (verify finds
        # it, repair removes it): at most the packs under way, or the plain uploads of
        # the batch being recorded and of the two sent after it, nothing more.
        untracked = in_store_at_kill - recorded
        assert len(untracked) <= (IN_FLIGHT if pack_threshold else (PIPELINE_DEPTH + 1) * 250)
        drift = verify(session, store, job.bucket_id, repair=True, delete_untracked=True)
        assert not drift.missing and set(drift.untracked) == untracked
        # No pack the catalog references is missing or truncated.
        assert verify(session, store, job.bucket_id, checksum_all=True).clean
        if pack_threshold:
            assert len(recorded) < 3000 / 100  # hundreds of files to an object


def test_api_backs_up_and_restores(settings: Settings, bucket_name: str, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 12, 2048)
    live = settings.model_copy(
        update={"scheduler_enabled": True, "scheduler_interval_seconds": 0.1}
    )
    with TestClient(create_app(live)) as client:
        bucket = client.post("/buckets/", json={"name": bucket_name}).json()
        job = client.post(
            "/backup-jobs/",
            json={
                "job_name": "api",
                "source_system": str(tmp_path / "src"),
                "bucket_id": bucket["id"],
                "key_prefix": "api",
            },
        ).json()
        deadline = time.monotonic() + 30
        while (job := client.get(f"/backup-jobs/{job['id']}").json())["status"] in (
            "pending",
            "running",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["status"] == "completed", job["error"]
        # Small files: one pack, one PUT (its bytes: the contents and their index).
        assert job["stats"]["new"] == 12 and job["stats"]["uploads"] == 1
        assert job["stats"]["bytes_uploaded"] > 12 * 2048
        files = client.get("/files/", params={"job_id": job["id"]}).json()
        assert {f["change"] for f in files} == {"new"}

        restored = client.post(
            f"/backup-jobs/{job['id']}/restore",
            json={"target": str(tmp_path / "out"), "prefix": "d01"},
        )
        assert restored.status_code == 200 and restored.json()["ok"]
        assert restored.json()["files"] == 1
        assert sorted(os.listdir(tmp_path / "out/d01")) == ["f00001.bin"]
        both = client.post(
            f"/backup-jobs/{job['id']}/restore",
            json={"target": "/tmp/x", "prefix": "a", "path": "b"},
        )
        assert both.status_code == 422 and both.json()["detail"][0]["loc"] == ["prefix"]


def test_an_unreachable_database_is_exit_code_3_in_one_line(
    s3_endpoint: tuple[str, str, str], tmp_path: Path
) -> None:
    from backup_operator.embedded import free_port

    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/catalog"
    for args in (["show", "1"], ["backup", str(tmp_path), "--bucket", "b"]):
        done = console(console_env(dead, s3_endpoint), *args)
        assert done.returncode == 3, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("backup-operator: the database is unavailable: OperationalError")
        assert "Connection refused" in line


def test_a_closed_pipe_ends_quietly(
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
) -> None:
    from backup_operator.catalog import jobs
    from backup_operator.services.buckets import create_bucket

    with unit_of_work(sessions) as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
        job_id = jobs.create_job(session, job_name="j", source_system="/x", bucket_id=bucket.id).id
    reader = subprocess.Popen(
        [sys.executable, "-m", "backup_operator", "show", str(job_id)],
        env=console_env(db_url, s3_endpoint),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()  # as `| head -0` does, before anything is written
    stderr = reader.stderr.read().decode()
    assert reader.wait(60) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_backup_on_a_terminal_shows_live_progress_with_an_eta(
    db_url: str, s3_endpoint: tuple[str, str, str], bucket_name: str, tmp_path: Path
) -> None:
    import pty
    import re

    make_tree(tmp_path / "src", files=400, size=100_000)
    primary, secondary = pty.openpty()
    env = {**console_env(db_url, s3_endpoint), "COLUMNS": "160", "TERM": "xterm"}
    process = start_backup(
        env, tmp_path / "src", bucket_name, 50, stdout=subprocess.DEVNULL, stderr=secondary
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(120) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert "400 files of 400" in text  # counted by the scan, done by the backup
    assert "40.0/40.0 MB" in text  # each byte read counted once
    assert re.search(r"\d+(\.\d+)? MB/s", text)  # a rate
    assert "ETA" in text and re.search(r"ETA \d+:\d\d:\d\d", text)
    assert "\r" in shown.decode(errors="replace") or "\x1b[" in shown.decode(errors="replace")


@pytest.mark.parametrize("recorded_before_stop", [1, 250, 1250])
def test_a_backup_stopped_by_sigterm_exits_143_at_once_and_hands_its_job_back(
    recorded_before_stop: int,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    # An evicted pod gets SIGTERM and, 30 s later, SIGKILL: the job must be handed back
    # well before, whatever the backup was doing (hashing, uploading, recording).
    make_tree(tmp_path / "src", 3000, 4096)
    worker = start_backup(
        {**console_env(db_url, s3_endpoint), "PYTHONFAULTHANDLER": "1"},
        tmp_path / "src",
        bucket_name,
        250,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    with sessions() as session:
        while (session.scalar(select(func.count()).select_from(File)) or 0) < recorded_before_stop:
            assert worker.poll() is None, "the backup ended before it could be stopped"
            assert time.monotonic() < deadline
            session.rollback()
            time.sleep(0.01)
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGABRT)  # faulthandler prints where each thread hangs
        code = worker.wait()
    stderr = worker.stderr.read().decode() if worker.stderr else ""
    assert code == 143, stderr
    assert "stopped by SIGTERM; handed back to be resumed" in stderr
    with sessions() as session:
        job = session.scalars(select(BackupJob)).one()
        assert job.status is JobStatus.PENDING and job.worker_id is None
        stored = stored_versions(session)
    # What it uploaded and did not record, it removed: no object is left untracked.
    assert {(v.key, v.version_id) for v in store.list_versions(bucket_name)} == stored

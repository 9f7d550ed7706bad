"""The operator process: peering between replicas, the liveness endpoint."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import RunningApiServer, api_server
from conftest import write
from operator_harness import JOBS, example, operator, phase

from backup_operator.embedded import free_port


@pytest.fixture
def api() -> Iterator[RunningApiServer]:
    with api_server() as running:
        yield running


def test_replicas_peer_so_that_one_acts_and_the_other_pauses(
    api: RunningApiServer,
    tmp_path: Path,
    db_url: str,
    s3_endpoint: tuple[str, str, str],
    bucket_name: str,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with operator(api, tmp_path / "a", db_url, s3_endpoint) as first:
        first.stop()
        first.apply(example("kopfpeering.yaml"))
        first.env["OPERATOR_PRIORITY"] = "100"
        first.start("--peering", "minio-backup-operator")
        # The first has announced itself before the second looks.
        peering = "kopf.dev/v1/kopfpeerings"
        first.wait_for(peering, "minio-backup-operator", lambda o: bool(o.get("status")))
        with operator(api, tmp_path / "b", db_url, s3_endpoint) as second:
            second.stop()
            second.env["OPERATOR_PRIORITY"] = "10"
            second.start("--peering", "minio-backup-operator")
            both = second.wait_for(
                peering, "minio-backup-operator", lambda o: len(o["status"]) == 2
            )
            assert sorted(p["priority"] for p in both["status"].values()) == [10, 100]
            write(tmp_path / "src", "a.txt", b"a")
            job = example("backupjob-path.yaml")
            job["spec"] = {"source": {"path": str(tmp_path / "src")}, "bucket": bucket_name}
            first.apply(job)
            first.wait_for(JOBS, job["metadata"]["name"], lambda o: phase(o) == "Completed")
            assert "Handler 'register' succeeded" in first.logs()
            assert "Handler 'register'" not in second.logs()


def test_the_liveness_endpoint_answers(
    api: RunningApiServer, tmp_path: Path, db_url: str, s3_endpoint: tuple[str, str, str]
) -> None:
    port = free_port()
    with operator(api, tmp_path, db_url, s3_endpoint) as op:
        op.stop()
        op.start("--standalone", "--liveness", f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def test_the_operator_serves_catalog_metrics_and_schedule_intervals(
    api: RunningApiServer, tmp_path: Path, db_url: str, s3_endpoint: tuple[str, str, str]
) -> None:
    port = free_port()
    with operator(api, tmp_path, db_url, s3_endpoint) as op:
        op.stop()
        op.env["METRICS_PORT"] = str(port)
        op.start("--standalone")
        schedule = example("backupschedule.yaml")  # "0 2 * * *": a day apart
        op.apply(schedule)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
                if 'minio_backup_schedule_interval_seconds{namespace="default"' in text:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(op.logs()[-3000:])
            time.sleep(0.2)
    assert (
        'minio_backup_schedule_interval_seconds{namespace="default",schedule="app-data-nightly"} 86400.0'
        in text
    )
    assert "minio_backup_object_store_up 1.0" in text

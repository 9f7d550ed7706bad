"""The real Kopf operator (`backup-operator operator`, a process of its own) against the
API server emulator, with real PostgreSQL and S3; kubectl as the user's client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from apiserver import ROOT, RunningApiServer

JOBS = "minio-backup.dev/v1alpha1/backupjobs"
POLICIES = "minio-backup.dev/v1alpha1/retentionpolicies"
SCHEDULES = "minio-backup.dev/v1alpha1/backupschedules"


class Operator:
    def __init__(self, api: RunningApiServer, env: dict[str, str], log: Path) -> None:
        self.api = api
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backup_operator", "operator", *(options or ["--standalone"])],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(60)
        finally:
            self.process = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        done = subprocess.run(
            ["kubectl", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done.stdout + done.stderr

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))

    def get(self, key: str, name: str) -> dict[str, Any] | None:
        return self.api.objects(key).get(name)

    def eventually(self, check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll `check` until it answers something truthy, and answer that; fail saying
        `what` did not happen, with the operator's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := check():
                return found
            time.sleep(0.1)
        raise AssertionError(f"{what} (waited {timeout}s)\n{self.logs()[-4000:]}")

    def wait_for(
        self,
        key: str,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 60,
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            obj = self.get(key, name)
            return obj if obj is not None and predicate(obj) else None

        found: dict[str, Any] = self.eventually(
            reached, f"{key} {name} did not get there; last: {self.get(key, name)}", timeout
        )
        return found

    def wait_gone(self, key: str, name: str, timeout: float = 30) -> None:
        self.eventually(
            lambda: self.get(key, name) is None,
            f"{name} was not released by its finalizer",
            timeout,
        )

    def wait_for_event(self, name: str, reason: str, timeout: float = 20) -> dict[str, Any]:
        def posted() -> dict[str, Any] | None:
            events = self.api.objects("v1/events").values()
            return next(
                (e for e in events if (e["involvedObject"]["name"], e["reason"]) == (name, reason)),
                None,
            )

        found: dict[str, Any] = self.eventually(posted, f"no {reason} event for {name}", timeout)
        return found


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return loaded


@contextmanager
def operator(
    api: RunningApiServer,
    tmp_path: Path,
    database_url: str,
    s3: tuple[str, str, str],
    **settings: str,
) -> Iterator[Operator]:
    """The operator process; `settings` add to or override its environment."""
    endpoint, access, secret = s3
    env = {
        **os.environ,
        "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig")),
        "SQLALCHEMY_DATABASE_URL": database_url,
        "MINIO_ENDPOINT": endpoint,
        "MINIO_ACCESS_KEY": access,
        "MINIO_SECRET_KEY": secret,
        "MINIO_SECURE": "false",
        "WATCH_NAMESPACES": "default",
        "OPERATOR_POLL_SECONDS": "0.3",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
        "METRICS_PORT": "0",  # several operators run at once: a test asks for it
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    running = Operator(api, env, tmp_path / "operator.log")
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            running.stop()

"""Operator benchmark, on the real kube-apiserver the tests use (tests/apiserver.py,
built by tests/k8s/build.sh), with real PostgreSQL and S3 and the real operator process
at its default settings:

- latency: BackupJobs of an empty source created one after the other, each timed from
  its creation to status Completed (median, p90);
- memory: the operator's RSS when idle, and its peak (VmHWM) while it backs up a path
  source of 16 files of 48 MB in its own process (at the default BACKUP_MEMORY_MIB);
- load: 500 BackupJobs created at once, time until all are Completed, and the operator's
  peak RSS (VmHWM);
- idle: with 2,000 finished BackupJobs and 200 BackupSchedules (next firing a year
  away), the requests per second the API server serves and the statements per second
  the operator sends PostgreSQL (counted in its statement log) while nothing happens,
  and the operator's CPU use and RSS.

Prints `name=value` lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import kubernetes  # noqa: E402
import psycopg  # noqa: E402
from apiserver import Cluster, control_plane  # noqa: E402
from servers import bench_servers  # noqa: E402

JOBS = "minio-backup.dev/v1alpha1/backupjobs"
SCHEDULES = "minio-backup.dev/v1alpha1/backupschedules"


def job(name: str, source: Path) -> dict[str, Any]:
    return {
        "apiVersion": "minio-backup.dev/v1alpha1",
        "kind": "BackupJob",
        "metadata": {"name": name},
        "spec": {"source": {"path": str(source)}, "bucket": "bench-operator"},
    }


def schedule(name: str, source: Path) -> dict[str, Any]:
    return {
        "apiVersion": "minio-backup.dev/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 0 1 1 *",  # once a year: idle for the whole measurement
            "jobTemplate": {"spec": job(name, source)["spec"]},
        },
    }


@contextmanager
def statements_logged(url: str, log: Path) -> Iterator[Callable[[], Counter[tuple[str, str]]]]:
    """While inside, PostgreSQL logs every statement with its application's name; answers
    a count of the statements logged so far, by application and text."""
    settings = {"log_statement": "'all'", "log_line_prefix": "'app=%a '"}
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        for name, value in settings.items():
            connection.execute(f"ALTER SYSTEM SET {name} = {value}")
        connection.execute("SELECT pg_reload_conf()")
        start = log.stat().st_size

        def counted() -> Counter[tuple[str, str]]:
            with log.open("rb") as handle:
                handle.seek(start)
                lines = handle.read().decode(errors="replace").splitlines()
            found = (
                (line.split(" ", 1)[0].removeprefix("app="), line.split("statement: ", 1)[1][:60])
                for line in lines
                if line.startswith("app=") and "statement: " in line
            )
            return Counter(found)

        try:
            yield counted
        finally:
            for name in settings:
                connection.execute(f"ALTER SYSTEM RESET {name}")
            connection.execute("SELECT pg_reload_conf()")


def completed(cluster: Cluster, namespace: str) -> set[str]:
    phases = cluster.phases(JOBS, namespace)
    return {name for name, phase in phases.items() if phase == "Completed"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--large-files", type=int, default=16, help="files of 48 MB")
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--idle-jobs", type=int, default=2000, help="finished, while idle")
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    empty = work / "empty"
    empty.mkdir()
    large = work / "large"
    large.mkdir()
    for i in range(args.large_files):
        with (large / f"f{i:02}").open("wb") as handle:
            for _ in range(48):
                handle.write(os.urandom(1024 * 1024))
    with bench_servers("operator") as (url, s3, _, pg), control_plane(work / "k8s") as cluster:
        namespace = cluster.new_namespace("bench")
        kubeconfig = cluster.kubeconfig(work / "kubeconfig", namespace=namespace)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "SQLALCHEMY_DATABASE_URL": url,
            "MINIO_ENDPOINT": s3.endpoint,
            "MINIO_ACCESS_KEY": s3.access_key,
            "MINIO_SECRET_KEY": s3.secret_key,
            "WATCH_NAMESPACES": namespace,
            "SOURCE_ROOTS": str(work),  # path sources must lie under it
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        log = (work / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "backup_operator", "operator", "--standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            kubernetes.config.load_kube_config(str(kubeconfig))
            custom = kubernetes.client.CustomObjectsApi()

            def create(name: str) -> None:
                custom.create_namespaced_custom_object(
                    "minio-backup.dev", "v1alpha1", namespace, "backupjobs", job(name, empty)
                )

            def wait(names: set[str], timeout: float, every: float = 0.02) -> None:
                deadline = time.monotonic() + timeout
                while True:
                    try:  # (a LIST of thousands may time out while the server is busy)
                        if names <= completed(cluster, namespace):
                            return
                    except httpx.TimeoutException:
                        pass
                    if time.monotonic() > deadline or operator.poll() is not None:
                        raise RuntimeError(f"not all Completed; see {work / 'operator.log'}")
                    time.sleep(every)

            create("warm-up")  # bucket creation and first connections are not measured
            wait({"warm-up"}, 60)
            print(f"operator_idle_rss_mb={rss_mb(operator.pid, 'VmRSS'):.0f}")
            if args.large_files:
                custom.create_namespaced_custom_object(
                    "minio-backup.dev", "v1alpha1", namespace, "backupjobs", job("large", large)
                )
                started = time.perf_counter()
                wait({"large"}, 600, every=0.2)
                seconds = time.perf_counter() - started
                print(f"large_backup_mb={args.large_files * 48}")
                print(f"large_backup_seconds={seconds:.1f}")
                print(f"operator_large_backup_peak_rss_mb={rss_mb(operator.pid):.0f}")
            latencies = []
            for i in range(args.sequential):
                started = time.perf_counter()
                create(f"seq-{i}")
                wait({f"seq-{i}"}, 60)
                latencies.append(time.perf_counter() - started)
            print(f"created_to_completed_median_seconds={statistics.median(latencies):.2f}")
            print(
                f"created_to_completed_p90_seconds={statistics.quantiles(latencies, n=10)[-1]:.2f}"
            )

            started = time.perf_counter()
            burst = {f"burst-{i}" for i in range(args.burst)}
            for name in sorted(burst):
                create(name)
            created = time.perf_counter() - started
            wait(burst, 1800, every=0.5)
            print(f"burst_jobs={len(burst)}")
            print(f"burst_create_seconds={created:.1f}")
            print(f"burst_all_completed_seconds={time.perf_counter() - started:.1f}")
            print(f"operator_peak_rss_mb={rss_mb(operator.pid):.0f}")

            made = len(burst) + args.sequential + 1 + (1 if args.large_files else 0)
            more = {f"more-{i}" for i in range(max(args.idle_jobs - made, 0))}
            for name in sorted(more):
                create(name)
            wait(more, 3600, every=1.0)
            schedules = {f"idle-{i}" for i in range(args.schedules)}
            for name in sorted(schedules):
                custom.create_namespaced_custom_object(
                    "minio-backup.dev",
                    "v1alpha1",
                    namespace,
                    "backupschedules",
                    schedule(name, empty),
                )
            deadline = time.monotonic() + 300
            while True:  # each has ticked once: its next firing is in its status
                scheduled = cluster.objects(SCHEDULES, namespace)
                ticked = {
                    n
                    for n, o in scheduled.items()
                    if (o.get("status") or {}).get("nextScheduleTime")
                }
                if schedules <= ticked:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"schedules did not tick; see {work / 'operator.log'}")
                time.sleep(1)
            time.sleep(5)  # the last status writes settle
            requests_before = cluster.metric("apiserver_request_total")
            cpu_before = cpu_seconds(operator.pid)
            with statements_logged(url, pg.data_dir / "postgres.log") as statements:
                time.sleep(args.idle_seconds)
                cpu = cpu_seconds(operator.pid) - cpu_before
                with psycopg.connect(url.replace("+psycopg", "")) as canary:
                    canary.execute("SELECT 'the log is being read'")
                time.sleep(1)  # (the log is written asynchronously)
                logged = statements()
            # (this counts every client, the benchmark's first scrape of /metrics included)
            requests = cluster.metric("apiserver_request_total") - requests_before
            ours = {k: n for k, n in logged.items() if k[0].startswith("minio-backup-operator")}
            if not logged:
                raise RuntimeError("PostgreSQL logged no statement, not even the canary")
            print(f"idle_backup_jobs={made + len(more)}")
            print(f"idle_schedules={len(schedules)}")
            print(f"idle_api_requests_per_second={requests / args.idle_seconds:.2f}")
            total = sum(ours.values())
            print(f"idle_catalog_statements_per_second={total / args.idle_seconds:.2f}")
            for (application, text), count in Counter(ours).most_common(3):
                print(f"#   {count} x {application}: {text}")
            print(f"idle_operator_cpu_percent={100 * cpu / args.idle_seconds:.1f}")
            print(f"idle_operator_rss_mb={rss_mb(operator.pid, 'VmRSS'):.0f}")
        finally:
            operator.terminate()
            operator.wait(60)
            log.close()


if __name__ == "__main__":
    main()

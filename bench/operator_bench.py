"""Operator benchmark, on the real kube-apiserver the tests use (tests/apiserver.py,
built by tests/k8s/build.sh), with real PostgreSQL and S3 and the real operator process
at its default settings:

- latency: BackupJobs of an empty source created one after the other, each timed from
  its creation to status Completed (median, p90);
- load: 500 BackupJobs created at once, time until all are Completed, and the operator's
  peak RSS (VmHWM).

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import kubernetes  # noqa: E402
from apiserver import Cluster, control_plane  # noqa: E402
from servers import bench_servers  # noqa: E402

JOBS = "minio-backup.dev/v1alpha1/backupjobs"


def job(name: str, source: Path) -> dict[str, Any]:
    return {
        "apiVersion": "minio-backup.dev/v1alpha1",
        "kind": "BackupJob",
        "metadata": {"name": name},
        "spec": {"source": {"path": str(source)}, "bucket": "bench-operator"},
    }


def completed(cluster: Cluster, namespace: str) -> set[str]:
    phases = cluster.phases(JOBS, namespace)
    return {name for name, phase in phases.items() if phase == "Completed"}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    empty = work / "empty"
    empty.mkdir()
    with bench_servers("operator") as (url, s3, _, _), control_plane(work / "k8s") as cluster:
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
                while not names <= completed(cluster, namespace):
                    if time.monotonic() > deadline or operator.poll() is not None:
                        raise RuntimeError(f"not all Completed; see {work / 'operator.log'}")
                    time.sleep(every)

            create("warm-up")  # bucket creation and first connections are not measured
            wait({"warm-up"}, 60)
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
            print(f"operator_peak_rss_mb={peak_rss_mb(operator.pid):.0f}")
        finally:
            operator.terminate()
            operator.wait(60)
            log.close()


if __name__ == "__main__":
    main()

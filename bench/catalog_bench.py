"""Catalog benchmark: bulk registration throughput, and query latency through real HTTP
with 1,000,000 files and 1,000,000 object versions in the catalog.

Prints one figure per line (`name=value`). Starts its own PostgreSQL and S3 server.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import time

import httpx
import psycopg
from servers import api_server, bench_servers

from backup_operator.catalog.files import FileIn, register_files
from backup_operator.catalog.jobs import create_job
from backup_operator.db import make_engine, make_sessionmaker
from backup_operator.services.buckets import create_bucket
from backup_operator.storage import ObjectStore, make_client

BATCH = 10_000


def sha(n: int) -> str:
    return hashlib.sha256(n.to_bytes(8, "big")).hexdigest()


def batch_of(start: int, count: int, distinct: int) -> list[FileIn]:
    """Files host<h>/dir<d>/file<i>; every 10th repeats an earlier content (a duplicate)."""
    return [
        FileIn(
            path=f"host{i % 10}/dir{(i // 10) % 1000}/file{i}.dat",
            size=1000 + i % 5000,
            sha256=sha(i % distinct if i % 10 == 9 else i),
        )
        for i in range(start, start + count)
    ]


def measure(http: httpx.Client, url: str, params: dict[str, object], runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        response = http.get(url, params=params)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return timings


def report(name: str, timings: list[float]) -> None:
    timings = sorted(timings)
    p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
    print(f"{name}_p50_ms={statistics.median(timings):.2f}")
    print(f"{name}_p99_ms={p99:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    with bench_servers("catalog") as (url, s3, _, _), contextlib.ExitStack() as cleanup:
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        store = ObjectStore(make_client(s3.endpoint, s3.access_key, s3.secret_key, secure=False))

        with sessions() as session:
            bucket = create_bucket(session, store, name="bench", object_lock=False)
            job = create_job(session, job_name="bench", source_system="/", bucket_id=bucket.id)
            session.commit()

        # Registration throughput through the domain function (one transaction a batch).
        total_seconds = 0.0
        registered = 0
        distinct = max(1, args.files // 2)
        for start in range(0, args.files, BATCH):
            files = batch_of(start, min(BATCH, args.files - start), distinct)
            with sessions() as session:
                started = time.perf_counter()
                register_files(session, job.id, files)
                session.commit()
                total_seconds += time.perf_counter() - started
            registered += len(files)
        print(f"catalog_files={registered}")
        print(f"register_files_per_second={registered / total_seconds:.0f}")

        # Object versions: 4 per object, inserted in bulk (the engine's path is measured
        # by its own benchmark; here they only have to be there).
        objects = args.versions // 4
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO backup_objects (bucket_id, key) "
                "SELECT %s, 'obj/' || g FROM generate_series(1, %s) g",
                (bucket.id, objects),
            )
            conn.execute(
                "INSERT INTO object_versions (object_id, version_id, size, sha256) "
                "SELECT o.id, md5(o.id::text || '-' || v), 1000, "
                "       encode(sha256((o.id * 10 + v)::text::bytea), 'hex') "
                "FROM backup_objects o, generate_series(1, 4) v ORDER BY o.id, v"
            )
            conn.execute("VACUUM ANALYZE")
            count = conn.execute("SELECT count(*) FROM object_versions").fetchone()
        print(f"catalog_object_versions={count[0] if count else 0}")

        # The API in its own process, through real HTTP.
        base = cleanup.enter_context(api_server(url, s3))
        with httpx.Client(base_url=base, timeout=30) as http:
            batch = [
                {"path": f"http/{i}", "size": 10, "sha256": sha(10**9 + i)} for i in range(BATCH)
            ]
            job2 = http.post(
                "/backup-jobs/",
                json={
                    "job_name": "http",
                    "source_system": "/",
                    "bucket_id": bucket.id,
                    "source_type": "registered",  # files come through the API
                },
            ).json()
            started = time.perf_counter()
            http.post(
                "/files/batch", json={"job_id": job2["id"], "files": batch}
            ).raise_for_status()
            print(f"register_files_http_per_second={BATCH / (time.perf_counter() - started):.0f}")

            latest = measure(http, "/backup-objects/latest/", {}, args.runs)
            assert len(http.get("/backup-objects/latest/").json()) == 100
            report("latest_first_page", latest)
            prefix = measure(http, "/files/", {"path_prefix": "host3/dir417/"}, args.runs)
            found = len(http.get("/files/", params={"path_prefix": "host3/dir417/"}).json())
            print(f"path_prefix_matches={found}")
            report("files_by_path_prefix", prefix)
            checksum = sha(9)  # content of file 9 and of file 500,009, its duplicate
            by_sum = measure(http, "/files/", {"sha256": checksum}, args.runs)
            print(
                f"checksum_matches={len(http.get('/files/', params={'sha256': checksum}).json())}"
            )
            report("duplicate_lookup_by_checksum", by_sum)
        engine.dispose()


if __name__ == "__main__":
    main()

"""Retention benchmark: a dry run over 1,000,000 object versions, and deleting 100,000
expired versions from the S3 server (batched DeleteObjects). Prints `name=value` lines.
Starts its own PostgreSQL and S3 server."""

from __future__ import annotations

import argparse
import io
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from servers import bench_servers
from sqlalchemy import text

from backup_operator.catalog.objects import Upload, record_versions
from backup_operator.catalog.retention import attach, create_policy, plan
from backup_operator.db import make_engine, make_sessionmaker
from backup_operator.services.buckets import create_bucket
from backup_operator.services.retention import apply
from backup_operator.storage import ObjectStore, make_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=1_000_000)
    parser.add_argument("--deletions", type=int, default=100_000)
    args = parser.parse_args()
    with bench_servers("retention") as (url, s3, _, _):
        sessions = make_sessionmaker(make_engine(url))
        client = make_client(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
        store = ObjectStore(client)

        # 1. Dry run over N versions: N/4 objects with 4 versions each, in the catalog only.
        with sessions() as session:
            bucket = create_bucket(session, store, name="dry-run", object_lock=False)
            policy = create_policy(session, name="dry", rules={"keep_last": 2})
            session.commit()
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO backup_objects (bucket_id, key) "
                "SELECT %s, 'obj/' || g FROM generate_series(1, %s) g",
                (bucket.id, args.versions // 4),
            )
            conn.execute(
                "INSERT INTO object_versions (object_id, version_id, size, sha256, created_at) "
                "SELECT o.id, md5(o.id::text || '-' || v), 1000, repeat('0', 64), "
                "       now() - make_interval(days => v) "
                "FROM backup_objects o, generate_series(1, 4) v"
            )
            conn.execute(
                "INSERT INTO object_retention (object_id, policy_id) "
                "SELECT id, %s FROM backup_objects",
                (policy.id,),
            )
            conn.execute("VACUUM ANALYZE")
        with sessions() as session:
            started = time.perf_counter()
            dry = plan(session, policy.id)
            seconds = time.perf_counter() - started
        print(f"dry_run_versions={len(dry.versions)}")
        print(f"dry_run_to_delete={len(dry.to_delete)}")
        print(f"dry_run_seconds={seconds:.2f}")

        # 2. Delete D expired versions: D/3 objects with 4 real S3 versions, keep_last 1.
        objects = args.deletions // 3
        with sessions() as session:
            real = create_bucket(session, store, name="expire", object_lock=False)
            expire = create_policy(session, name="expire", rules={"keep_last": 1})
            session.commit()

        def put(key: str) -> Upload:
            version_id, etag = store.put("expire", key, io.BytesIO(key.encode()), len(key))
            return Upload(key, version_id, len(key), "0" * 64, etag)

        started = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            uploads = list(pool.map(put, [f"k/{i}" for i in range(objects) for _ in range(4)]))
        print(f"seed_versions={len(uploads)}")
        print(f"seed_seconds={time.perf_counter() - started:.1f}")
        with sessions() as session:
            for start in range(0, len(uploads), 5000):
                # Recorded, not linked: these versions hold no file.
                record_versions(session, real.id, uploads[start : start + 5000], job_id=None)
            session.commit()
            ids = list(
                session.scalars(
                    text("SELECT id FROM backup_objects WHERE bucket_id = :b"), {"b": real.id}
                )
            )
            attach(session, expire.id, ids)
            session.commit()
            started = time.perf_counter()
            result = apply(session, store, expire.id, actor="bench")
            seconds = time.perf_counter() - started
        print(f"deleted_versions={len(result.deleted)}")
        print(f"delete_seconds={seconds:.1f}")
        print(f"deletes_per_second={len(result.deleted) / seconds:.0f}")


if __name__ == "__main__":
    main()

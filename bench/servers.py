"""The servers every benchmark needs: PostgreSQL with a migrated catalog, and S3."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3, free_port
from backup_operator.migrate import upgrade


@contextlib.contextmanager
def bench_servers(name: str) -> Iterator[tuple[str, EmbeddedS3, Path, EmbeddedPostgres]]:
    """Answer (catalog URL, S3 server, work directory, PostgreSQL); all removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
    # Sized like a real catalog server, so the figures are not about buffer eviction.
    pg = EmbeddedPostgres(work / "pg", shared_buffers="2GB").start()
    s3 = EmbeddedS3(work / "s3").start()
    try:
        with psycopg.connect(pg.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = pg.url("bench")
        upgrade(url)
        yield url, s3, work, pg
    finally:
        s3.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def api_server(url: str, s3: EmbeddedS3) -> Iterator[str]:
    """The API in its own process on this catalog and S3 server (no scheduler), for
    measuring through real HTTP; answers its base URL once it is healthy."""
    port = free_port()
    env = {
        **os.environ,
        "SQLALCHEMY_DATABASE_URL": url,
        "MINIO_ENDPOINT": s3.endpoint,
        "MINIO_ACCESS_KEY": s3.access_key,
        "MINIO_SECRET_KEY": s3.secret_key,
        "PORT": str(port),
        "SCHEDULER_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "backup_operator", "serve"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait()

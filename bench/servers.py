"""The servers every benchmark needs: PostgreSQL with a migrated catalog, and S3."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3
from backup_operator.migrate import upgrade


@contextlib.contextmanager
def bench_servers(name: str) -> Iterator[tuple[str, EmbeddedS3, Path]]:
    """Answer (catalog URL, S3 server, work directory); all removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
    # Sized like a real catalog server, so the figures are not about buffer eviction.
    pg = EmbeddedPostgres(work / "pg", shared_buffers="2GB").start()
    s3 = EmbeddedS3(work / "s3").start()
    try:
        with psycopg.connect(pg.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = pg.url("bench")
        upgrade(url)
        yield url, s3, work
    finally:
        s3.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

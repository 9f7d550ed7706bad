"""Lineage benchmark: catalog growth with unchanged backups, against restic's repository
growth, and query latency through real HTTP at many files x many backups.

Part 1 (the engine, a real tree): a source of --files small files is backed up once,
then --reruns times unchanged, by this engine and by restic in the same run; printed:
catalog bytes (PostgreSQL relation sizes) added by the first and by each unchanged
backup, restic's repository bytes likewise, and the seconds of the unchanged re-runs.

Part 2 (the catalog at scale): --scale-files states of one source and --scale-backups
completed jobs of it, each changing --churn files (fabricated in SQL in the catalog's own
shape, since backing up that many files that often is not the point here); then p50/p99
through HTTP of: the first page of a job's tree, a path-prefix search in a job, a diff
between two jobs, and the duplicates summary; and the web interface's folder pages (time
to first byte and to the last): the root, a folder of 1,000 folders, one of 1,000 files,
and a search across every backup for a name one path has and for a fragment many have.

Prints one figure per line (`name=value`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
from servers import api_server, bench_servers

CATALOG_SIZE = """
    SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind = 'r'
"""


def make_tree(root: Path, files: int) -> None:
    rng = random.Random(7)
    for i in range(files):
        path = root / f"d{i % 500:03}" / f"f{i:07}"
        if i < 500:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 4096)))


def catalog_bytes(url: str) -> int:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # sizes after routine maintenance, not dead tuples
        row = conn.execute(CATALOG_SIZE).fetchone()
    return int(row[0]) if row else 0


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def restic_repo_bytes(env: dict[str, str], repo: str) -> int:
    out = subprocess.run(
        ["restic", "-r", repo, "stats", "--mode", "raw-data", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)["total_size"])


def part_growth(url: str, s3, work: Path, files: int, reruns: int, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    tree = work / "tree"
    make_tree(tree, files)
    print(f"growth_files={files}")
    ours = [sys.executable, "-m", "backup_operator", "backup", str(tree), "--bucket", "growth"]
    empty = catalog_bytes(url)
    seconds, _ = timed(ours, env)
    first = catalog_bytes(url) - empty
    print(f"ours_first_backup_seconds={seconds:.2f}")
    print(f"ours_first_backup_catalog_bytes={first}")
    rerun_seconds, added = [], []
    for _ in range(reruns):
        before = catalog_bytes(url)
        seconds, out = timed(ours, env)
        assert json.loads(out)["unchanged"] == files, out
        rerun_seconds.append(seconds)
        added.append(catalog_bytes(url) - before)
    total = catalog_bytes(url) - empty
    print(f"ours_unchanged_backups={reruns}")
    print(f"ours_unchanged_catalog_bytes_median={statistics.median(added):.0f}")
    print(f"ours_unchanged_over_first_pct={100 * statistics.median(added) / first:.2f}")
    print(f"ours_catalog_after_all_over_first={total / first:.3f}")
    print(f"ours_unchanged_seconds_median={statistics.median(rerun_seconds):.2f}")

    s3_env = {
        **env,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "RESTIC_PASSWORD": "bench",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    repo = f"s3:http://{s3.endpoint}/restic-growth"
    subprocess.run(["restic", "-r", repo, "init"], env=s3_env, check=True, capture_output=True)
    restic = ["restic", "-r", repo, "backup", "--quiet", str(tree)]
    seconds, _ = timed(restic, s3_env)
    print(f"restic_first_backup_seconds={seconds:.2f}")
    print(f"restic_first_backup_repo_bytes={restic_repo_bytes(s3_env, repo)}")
    restic_seconds, restic_added = [], []
    for _ in range(reruns):
        before = restic_repo_bytes(s3_env, repo)
        seconds, _ = timed(restic, s3_env)
        restic_seconds.append(seconds)
        restic_added.append(restic_repo_bytes(s3_env, repo) - before)
    print(f"restic_unchanged_repo_bytes_median={statistics.median(restic_added):.0f}")
    print(f"restic_unchanged_seconds_median={statistics.median(restic_seconds):.2f}")
    print(
        "ratio_unchanged_ours_over_restic="
        f"{statistics.median(rerun_seconds) / statistics.median(restic_seconds):.2f}"
    )


FABRICATE = """
    INSERT INTO files (job_id, bucket_id, source_id, first_seq, end_seq, path, size, sha256,
                       change, mode, is_duplicate, canonical_file_id)
    SELECT %(job)s, %(bucket)s, %(source)s, %(seq)s, NULL,
           'host/d' || (i %% 1000) || '/f' || i || %(suffix)s, 100 + i %% 4000,
           encode(sha256((i || %(suffix)s)::bytea), 'hex'), %(change)s, 420, false, NULL
    FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS i
"""


def part_scale(url: str, s3, files: int, backups: int, churn: int, runs: int) -> None:  # type: ignore[no-untyped-def]
    plain = url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        bucket = conn.execute("INSERT INTO buckets (name) VALUES ('scale') RETURNING id").fetchone()
        assert bucket is not None
        source = conn.execute(
            "INSERT INTO sources (bucket_id, source_system, key_prefix, source_type, head_seq)"
            " VALUES (%s, '/scale', '', 'directory', %s) RETURNING id",
            (bucket[0], backups),
        ).fetchone()
        assert source is not None
        job_ids = []
        for seq in range(1, backups + 1):
            row = conn.execute(
                "INSERT INTO backup_jobs (job_name, source_system, bucket_id, source_id,"
                " status, lineage_seq, parent_job_id, started_at, completed_at)"
                " VALUES ('scale', '/scale', %s, %s, 'completed', %s, %s,"
                " now() - make_interval(days => %s), now() - make_interval(days => %s))"
                " RETURNING id",
                (
                    bucket[0],
                    source[0],
                    seq,
                    job_ids[-1] if job_ids else None,
                    backups - seq + 1,
                    backups - seq,
                ),
            ).fetchone()
            assert row is not None
            job_ids.append(row[0])
            params = {"bucket": bucket[0], "source": source[0], "seq": seq, "job": row[0]}
            if seq == 1:
                conn.execute(
                    FABRICATE, {**params, "start": 1, "stop": files, "suffix": "", "change": "new"}
                )
                conn.execute("ANALYZE files")  # fresh statistics: a linear plan below
                # Every 10th file is a duplicate of another's content.
                conn.execute(
                    "UPDATE files f SET is_duplicate = true, sha256 = c.sha256,"
                    " canonical_file_id = c.id FROM files c"
                    " WHERE f.source_id = %s AND c.source_id = %s"
                    " AND f.id %% 10 = 0 AND c.id = f.id - 1",
                    (source[0], source[0]),
                )
                continue
            # `churn` files change: their state closes, a new one opens.
            start = 1 + ((seq * churn) % max(1, files - churn))
            conn.execute(
                "UPDATE files SET end_seq = %s WHERE source_id = %s AND end_seq IS NULL"
                " AND path IN (SELECT 'host/d' || (i %% 1000) || '/f' || i"
                "              FROM generate_series(%s::bigint, %s::bigint) i)",
                (seq, source[0], start, start + churn - 1),
            )
            conn.execute(
                FABRICATE.replace("|| %(suffix)s, 100", ", 100"),
                {
                    **params,
                    "start": start,
                    "stop": start + churn - 1,
                    "suffix": f"v{seq}",
                    "change": "changed",
                },
            )
        conn.execute("VACUUM ANALYZE")
        rows = conn.execute("SELECT count(*) FROM files").fetchone()
    print(f"scale_files={files}")
    print(f"scale_backups={backups}")
    print(f"scale_churn_per_backup={churn}")
    print(f"scale_file_rows={rows[0] if rows else 0}")

    with api_server(url, s3) as base:
        newest, middle = job_ids[-1], job_ids[len(job_ids) // 2]
        queries = {
            "job_tree_first_page": ("/files/", {"job_id": newest}),
            "job_path_prefix": ("/files/", {"job_id": newest, "path_prefix": "host/d417/"}),
            "diff_two_jobs": (f"/backup-jobs/{newest}/diff", {"against": middle}),
            "duplicates_summary": ("/files/duplicates/summary", {"bucket_id": bucket[0]}),
        }
        with httpx.Client(base_url=base, timeout=60) as http:
            for name, (path, params) in queries.items():
                first = http.get(path, params=params)
                first.raise_for_status()
                timings = []
                for _ in range(runs):
                    started = time.perf_counter()
                    http.get(path, params=params).raise_for_status()
                    timings.append((time.perf_counter() - started) * 1000)
                timings.sort()
                body = first.json()
                print(f"{name}_items={len(body) if isinstance(body, list) else 1}")
                print(f"{name}_p50_ms={statistics.median(timings):.2f}")
                print(
                    f"{name}_p99_ms={timings[min(len(timings) - 1, int(len(timings) * 0.99))]:.2f}"
                )
            folders = {
                "ui_folder_root": {},
                "ui_folder_of_1000_folders": {"path": "host/"},
                "ui_folder_of_1000_files": {"path": "host/d417/"},
            }
            pages = [(name, f"/ui/jobs/{newest}/tree", params) for name, params in folders.items()]
            # A name in one path of all (each state of it read), and one in many.
            pages.append(("ui_search_one_path", "/ui/search", {"q": f"/f{files // 2}"}))
            pages.append(("ui_search_many_paths", "/ui/search", {"q": "d417/f41"}))
            for name, path, params in pages:
                first_byte, whole = ui_page_timings(http, path, params, runs)
                print(f"{name}_first_byte_p50_ms={statistics.median(first_byte):.2f}")
                print(f"{name}_full_p50_ms={statistics.median(whole):.2f}")


def ui_page_timings(
    http: httpx.Client, path: str, params: dict[str, str], runs: int
) -> tuple[list[float], list[float]]:
    """Milliseconds to a page's first byte and to its last, `runs` times (after one)."""
    first_byte, whole = [], []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        with http.stream("GET", path, params=params) as response:
            response.raise_for_status()
            chunks = response.iter_bytes()
            next(chunks)
            reached = time.perf_counter()
            for _ in chunks:
                pass
        if attempt:  # the first warms the caches
            first_byte.append((reached - started) * 1000)
            whole.append((time.perf_counter() - started) * 1000)
    return first_byte, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--reruns", type=int, default=7)
    parser.add_argument("--scale-files", type=int, default=1_000_000)
    parser.add_argument("--scale-backups", type=int, default=30)
    parser.add_argument("--churn", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with bench_servers("lineage") as (url, s3, work, _):
        env = {
            **os.environ,
            "SQLALCHEMY_DATABASE_URL": url,
            "MINIO_ENDPOINT": s3.endpoint,
            "MINIO_ACCESS_KEY": s3.access_key,
            "MINIO_SECRET_KEY": s3.secret_key,
            "LOG_LEVEL": "WARNING",
        }
        if args.files:
            part_growth(url, s3, work, args.files, args.reruns, env)
        if args.scale_files:
            part_scale(url, s3, args.scale_files, args.scale_backups, args.churn, args.runs)


if __name__ == "__main__":
    main()

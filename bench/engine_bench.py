"""Engine benchmark: this engine against restic and rclone on the same S3 server.

Dataset (deterministic): 100 directories; 8,000 unique files of random bytes, 1-16 KB;
2,000 more files each repeating one of those; 20 files of 10 MB (about 300 MB, 10,020
files). Each tool backs it up into its own bucket, then again with nothing changed.
Then: the same backup with packing off (every file its own object) against rclone; a
restore of the whole tree against restic's; 100,000 files of 0-4 KB against restic (and,
packing off, against rclone); peak RSS while backing up a tree of empty files, and
restore speed of the 20 large files.
Prints one figure per line (`name=value`).

Needs Debian's `restic` and `rclone` (`make bench` installs them when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servers import bench_servers


def make_dataset(root: Path, seed: int = 42) -> int:
    rng = random.Random(seed)
    unique: list[bytes] = []
    total = 0
    for i in range(8000):
        content = rng.randbytes(rng.randint(1024, 16 * 1024))
        unique.append(content)
        path = root / f"dir{i % 100:03}" / f"unique{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        total += len(content)
    for i in range(2000):
        content = unique[rng.randrange(len(unique))]
        (root / f"dir{i % 100:03}" / f"repeat{i:05}.bin").write_bytes(content)
        total += len(content)
    (root / "large").mkdir()
    for i in range(20):
        content = rng.randbytes(10 * 1024 * 1024)
        (root / "large" / f"big{i:02}.bin").write_bytes(content)
        total += len(content)
    return total


# Peak RSS comes from wait4, and a child's count starts from its parent's size at fork:
# so the command is forked from this small launcher, not from the benchmark itself.
LAUNCHER = """
import os, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(report, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, the command's peak RSS in MB, and its stdout."""
    read_end, write_end = os.pipe()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(write_end), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(write_end,),
    )
    os.close(write_end)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    with os.fdopen(read_end) as rss:
        peak_kb = int(rss.read() or 0)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {err[-2000:]!r}")
    return seconds, peak_kb / 1024, out.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--empty-files", type=int, default=1_000_000)
    parser.add_argument("--small-files", type=int, default=100_000, help="files of 0-4 KB")
    parser.add_argument("--skip-peers", action="store_true", help="only this engine")
    parser.add_argument(
        "--no-small-plain",
        dest="small_plain",
        action="store_false",
        help="skip the small files with packing off against rclone (minutes)",
    )
    parser.add_argument("--make-dataset", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_dataset:
        print(make_dataset(Path(args.make_dataset)))
        return

    with bench_servers("engine") as (url, s3, work):
        env = {
            **os.environ,
            "SQLALCHEMY_DATABASE_URL": url,
            "MINIO_ENDPOINT": s3.endpoint,
            "MINIO_ACCESS_KEY": s3.access_key,
            "MINIO_SECRET_KEY": s3.secret_key,
            "LOG_LEVEL": "WARNING",
        }
        data = work / "data"
        # In a child process, so this one stays small: a child's peak RSS (wait4) starts
        # from its parent's size at fork.
        total = int(
            subprocess.run(
                [sys.executable, __file__, "--make-dataset", str(data)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        print("dataset_files=10020")
        print(f"dataset_bytes={total}")

        ours = [sys.executable, "-m", "backup_operator", "backup", str(data), "--bucket", "ours"]
        results: dict[str, float] = {}
        seconds, rss, out = run_measured(ours, env)
        stats = json.loads(out)
        results["ours_full"] = seconds
        print(f"ours_full_seconds={seconds:.2f}")
        print(f"ours_full_peak_rss_mb={rss:.0f}")
        print(f"ours_full_uploaded_bytes={stats['bytes_uploaded']}")
        print(f"ours_full_saved_bytes={stats['bytes_saved']}")
        seconds, rss, out = run_measured(ours, env)
        results["ours_rerun"] = seconds
        print(f"ours_rerun_seconds={seconds:.2f}")
        print(f"ours_rerun_peak_rss_mb={rss:.0f}")
        print(f"ours_rerun_unchanged={json.loads(out)['unchanged']}")
        full_job = stats["job_id"]

        if not args.skip_peers:
            s3_env = {
                **env,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "RESTIC_PASSWORD": "bench",
                "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            }
            repo = f"s3:http://{s3.endpoint}/restic"
            subprocess.run(
                ["restic", "-r", repo, "init"], env=s3_env, check=True, capture_output=True
            )
            restic = ["restic", "-r", repo, "backup", "--quiet", str(data)]
            for run in ("full", "rerun"):
                seconds, rss, _ = run_measured(restic, s3_env)
                results[f"restic_{run}"] = seconds
                print(f"restic_{run}_seconds={seconds:.2f}")
                print(f"restic_{run}_peak_rss_mb={rss:.0f}")
            # A CA bundle in the environment makes rclone refuse a plain-HTTP endpoint.
            rclone_env = {
                **{k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"},
                "RCLONE_CONFIG_BENCH_TYPE": "s3",
                "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3.access_key,
                "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3.secret_key,
                "RCLONE_CONFIG_BENCH_ENDPOINT": f"http://{s3.endpoint}",
            }
            subprocess.run(["rclone", "mkdir", "bench:rclone"], env=rclone_env, check=True)
            rclone = [
                "rclone",
                "copy",
                "--transfers",
                "16",
                "--checkers",
                "16",
                str(data),
                "bench:rclone",
            ]
            for run in ("full", "rerun"):
                seconds, rss, _ = run_measured(rclone, rclone_env)
                results[f"rclone_{run}"] = seconds
                print(f"rclone_{run}_seconds={seconds:.2f}")
                print(f"rclone_{run}_peak_rss_mb={rss:.0f}")
            print(
                f"ratio_full_ours_over_restic={results['ours_full'] / results['restic_full']:.2f}"
            )
            print(
                f"ratio_full_ours_over_rclone={results['ours_full'] / results['rclone_full']:.2f}"
            )
            print(
                "ratio_rerun_ours_over_restic="
                f"{results['ours_rerun'] / results['restic_rerun']:.2f}"
            )

            # Packing off: every file its own object, as rclone stores them.
            seconds, rss, _ = run_measured([*ours[:-1], "ours-plain", "--pack-threshold", "0"], env)
            print(f"ours_plain_full_seconds={seconds:.2f}")
            print(f"ratio_plain_full_ours_over_rclone={seconds / results['rclone_full']:.2f}")

            # Restoring the whole tree.
            restored_ours = work / "restore-ours"
            seconds, rss, _ = run_measured(
                [
                    sys.executable,
                    "-m",
                    "backup_operator",
                    "restore",
                    str(stats["job_id"]),
                    str(restored_ours),
                ],
                env,
            )
            results["ours_restore"] = seconds
            print(f"ours_restore_seconds={seconds:.2f}")
            print(f"ours_restore_peak_rss_mb={rss:.0f}")
            shutil.rmtree(restored_ours)
            restored_restic = work / "restore-restic"
            seconds, rss, _ = run_measured(
                ["restic", "-r", repo, "restore", "latest", "--target", str(restored_restic)],
                s3_env,
            )
            print(f"restic_restore_seconds={seconds:.2f}")
            print(f"restic_restore_peak_rss_mb={rss:.0f}")
            print(f"ratio_restore_ours_over_restic={results['ours_restore'] / seconds:.2f}")
            shutil.rmtree(restored_restic)

            if args.small_files:
                small = work / "small"
                rng = random.Random(5)
                for i in range(args.small_files):
                    directory = small / f"d{i // 1000:03}"
                    if i % 1000 == 0:
                        directory.mkdir(parents=True)
                    (directory / f"s{i:06}").write_bytes(rng.randbytes(rng.randint(0, 4096)))
                print(f"small_files={args.small_files}")
                seconds, rss, _ = run_measured(
                    [
                        sys.executable,
                        "-m",
                        "backup_operator",
                        "backup",
                        str(small),
                        "--bucket",
                        "small",
                    ],
                    env,
                )
                print(f"ours_small_full_seconds={seconds:.2f}")
                print(f"ours_small_full_peak_rss_mb={rss:.0f}")
                small_restic = ["restic", "-r", repo, "backup", "--quiet", str(small)]
                restic_seconds, rss, _ = run_measured(small_restic, s3_env)
                print(f"restic_small_full_seconds={restic_seconds:.2f}")
                print(f"restic_small_full_peak_rss_mb={rss:.0f}")
                print(f"ratio_small_full_ours_over_restic={seconds / restic_seconds:.2f}")
                if args.small_plain:  # packing off: one object per file, as rclone stores
                    plain_seconds, _, _ = run_measured(
                        [*ours[:4], str(small), "--bucket", "small-plain", "--pack-threshold", "0"],
                        env,
                    )
                    print(f"ours_small_plain_full_seconds={plain_seconds:.2f}")
                    subprocess.run(
                        ["rclone", "mkdir", "bench:rclone-small"], env=rclone_env, check=True
                    )
                    rclone_seconds, _, _ = run_measured(
                        [*rclone[:-2], str(small), "bench:rclone-small"], rclone_env
                    )
                    print(f"rclone_small_full_seconds={rclone_seconds:.2f}")
                    print(
                        "ratio_small_plain_full_ours_over_rclone="
                        f"{plain_seconds / rclone_seconds:.2f}"
                    )
                shutil.rmtree(small)

        target = work / "restore"
        seconds, rss, out = run_measured(
            [
                sys.executable,
                "-m",
                "backup_operator",
                "restore",
                str(full_job),
                str(target),
                "--prefix",
                "large/",
            ],
            env,
        )
        restored = json.loads(out)
        print(f"restore_large_files={restored['files']}")
        print(f"restore_large_mb_per_second={restored['bytes'] / 1e6 / seconds:.0f}")
        print(f"restore_large_peak_rss_mb={rss:.0f}")
        shutil.rmtree(target)

        if args.empty_files:
            empty = work / "empty"
            for i in range(args.empty_files):
                directory = empty / f"d{i // 10_000:03}"
                if i % 10_000 == 0:
                    directory.mkdir(parents=True)
                os.close(os.open(directory / f"e{i:07}", os.O_CREAT | os.O_WRONLY, 0o644))
            seconds, rss, out = run_measured(
                [
                    sys.executable,
                    "-m",
                    "backup_operator",
                    "backup",
                    str(empty),
                    "--bucket",
                    "empty-files",
                ],
                env,
            )
            print(f"empty_files={json.loads(out)['files_seen']}")
            print(f"empty_files_seconds={seconds:.1f}")
            print(f"empty_files_peak_rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()

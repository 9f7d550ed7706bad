"""Engine benchmark: this engine against restic and rclone on the same S3 server.

Dataset (deterministic): 100 directories; 8,000 unique files of random bytes, 1-16 KB;
2,000 more files each repeating one of those; 20 files of 10 MB (about 300 MB, 10,020
files). Each tool backs it up into its own bucket, then again with nothing changed.
Then: the same backup with packing off (every file its own object) against rclone; a
restore of the whole tree against restic's; 100,000 files of 0-4 KB against restic (and,
packing off, against rclone); peak RSS while backing up a tree of empty files, and
restore speed of the 20 large files.
Each case runs `--runs` times (3; the whole-tree restore at least 5), the tools taking
turns; its figures are medians, with the CPU seconds of the tool, of PostgreSQL and of
the S3 server meanwhile. Every case starts with what it reads out of the page cache (the
tree, or the store's data for a restore), as a backup of data not read lately does.
Prints one figure per line (`name=value`).

Needs Debian's `restic` and `rclone` (`make bench` installs them when missing).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from servers import bench_servers

from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3


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


# Peak RSS and CPU time come from wait4, and a child's RSS count starts from its parent's
# size at fork: so the command is forked from this small launcher, not from the benchmark.
LAUNCHER = """
import os, sys
report = int(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
os.write(report, f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}".encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""

TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds a server's process tree has used so far: the live processes' own and
    those of the children they reaped (PostgreSQL's backends come and go)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / TICKS
    total = 0.0
    for pid, seconds in times.items():
        ancestor = pid
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            total += seconds
    return total


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_mb: float
    cpu: float  # the command's own CPU seconds
    catalog_cpu: float  # PostgreSQL's CPU seconds meanwhile
    s3_cpu: float  # the S3 server's CPU seconds meanwhile
    out: str


def evict(root: Path) -> None:
    """Take the files under `root` out of the page cache (written back first). This
    machine pages out what has not been touched for seconds: without this, whichever
    tool ran after a long one read the tree from the disk and the next from memory."""
    os.sync()
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:  # gone meanwhile
                continue
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(descriptor)


class Measure:
    """Runs commands one at a time and says what each cost, the servers' CPU included.
    Each starts with what it reads out of the page cache: a backup's tree, a restore's
    store (the S3 server's data)."""

    def __init__(self, pg: EmbeddedPostgres, s3: EmbeddedS3) -> None:
        assert pg.process is not None and s3.process is not None
        self.servers = (pg.process.pid, s3.process.pid)
        self.store = s3.data_dir

    def __call__(self, command: list[str], env: dict[str, str], reads: Path | None = None) -> Run:
        evict(reads or self.store)
        before = [tree_cpu_seconds(pid) for pid in self.servers]
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
        after = [tree_cpu_seconds(pid) for pid in self.servers]
        with os.fdopen(read_end) as report:
            peak_kb, cpu = report.read().split()
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({process.returncode}): {err[-2000:]!r}")
        return Run(
            seconds,
            int(peak_kb) / 1024,
            float(cpu),
            after[0] - before[0],
            after[1] - before[1],
            out.decode(),
        )


class Figures:
    """Each case is run several times; its figures are the medians, printed as they come."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, runs: list[Run]) -> Run:
        """Print a case's medians; answer its median run (for its output)."""
        median = statistics.median
        seconds = median(r.seconds for r in runs)
        self.seconds[name] = seconds
        print(f"{name}_seconds={seconds:.2f}")
        if len(runs) > 1:
            print(f"{name}_runs_seconds={','.join(f'{r.seconds:.2f}' for r in runs)}")
        print(f"{name}_peak_rss_mb={median(r.rss_mb for r in runs):.0f}")
        # Where the time went: the tool, the catalog and the S3 server share the machine's
        # cores; busy_percent is how much of all of them the three used together.
        cpu = [(r.cpu, r.catalog_cpu, r.s3_cpu) for r in runs]
        for index, part in enumerate(("cpu", "catalog_cpu", "s3_cpu")):
            print(f"{name}_{part}_seconds={median(c[index] for c in cpu):.2f}")
        busy = median(sum(c) / r.seconds / CORES * 100 for c, r in zip(cpu, runs, strict=True))
        print(f"{name}_busy_percent={busy:.0f}")
        return min(runs, key=lambda r: abs(r.seconds - seconds))

    def ratio(self, name: str, ours: str, peer: str) -> None:
        print(f"ratio_{name}={self.seconds[ours] / self.seconds[peer]:.2f}")


def make_small_tree(root: Path, files: int) -> None:
    rng = random.Random(5)
    for i in range(files):
        directory = root / f"d{i // 1000:03}"
        if i % 1000 == 0:
            directory.mkdir(parents=True)
        (directory / f"s{i:06}").write_bytes(rng.randbytes(rng.randint(0, 4096)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each case (medians)")
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
    peers = not args.skip_peers
    rounds = range(args.runs)

    with bench_servers("engine") as (url, s3, work, pg):
        measure = Measure(pg, s3)
        figures = Figures()
        env = {
            **os.environ,
            "SQLALCHEMY_DATABASE_URL": url,
            "MINIO_ENDPOINT": s3.endpoint,
            "MINIO_ACCESS_KEY": s3.access_key,
            "MINIO_SECRET_KEY": s3.secret_key,
            "LOG_LEVEL": "WARNING",
        }
        s3_env = {
            **env,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "RESTIC_PASSWORD": "bench",
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        }
        # A CA bundle in the environment makes rclone refuse a plain-HTTP endpoint.
        rclone_env = {
            **{k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"},
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": s3.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": s3.secret_key,
            "RCLONE_CONFIG_BENCH_ENDPOINT": f"http://{s3.endpoint}",
        }

        def ours(*arguments: str) -> list[str]:
            return [sys.executable, "-m", "backup_operator", *arguments]

        def restic(repository: str, *arguments: str) -> list[str]:
            return ["restic", "-r", f"s3:http://{s3.endpoint}/{repository}", *arguments]

        def new_restic(repository: str) -> None:
            subprocess.run(restic(repository, "init"), env=s3_env, check=True, capture_output=True)

        def rclone_copy(tree: Path, bucket: str) -> list[str]:
            subprocess.run(["rclone", "mkdir", f"bench:{bucket}"], env=rclone_env, check=True)
            return ["rclone", "copy", "--transfers", "16", "--checkers", "16", str(tree),
                    f"bench:{bucket}"]  # fmt: skip

        print(f"cpu_cores={CORES}")
        print(f"runs={args.runs}")
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

        # Each round backs the tree up anew with each tool (its own bucket or repository),
        # then again with nothing changed; the tools take turns, so a slower moment of the
        # machine falls on all of them.
        runs: dict[str, list[Run]] = collections.defaultdict(list)
        for i in rounds:
            for case in ("full", "rerun"):
                runs[f"ours_{case}"].append(
                    measure(ours("backup", str(data), "--bucket", f"ours-{i}"), env, data)
                )
            if peers:
                new_restic(f"restic-{i}")
                for case in ("full", "rerun"):
                    command = restic(f"restic-{i}", "backup", "--quiet", str(data))
                    runs[f"restic_{case}"].append(measure(command, s3_env, data))
                command = rclone_copy(data, f"rclone-{i}")
                for case in ("full", "rerun"):
                    runs[f"rclone_{case}"].append(measure(command, rclone_env, data))
                # Packing off: every file its own object, as rclone stores them.
                command = ours(
                    "backup", str(data), "--bucket", f"plain-{i}", "--pack-threshold", "0"
                )
                runs["ours_plain_full"].append(measure(command, env, data))
        full = json.loads(figures.add("ours_full", runs["ours_full"]).out)
        print(f"ours_full_uploaded_bytes={full['bytes_uploaded']}")
        print(f"ours_full_saved_bytes={full['bytes_saved']}")
        rerun = json.loads(figures.add("ours_rerun", runs["ours_rerun"]).out)
        print(f"ours_rerun_unchanged={rerun['unchanged']}")
        if peers:
            for name in (
                "restic_full",
                "restic_rerun",
                "rclone_full",
                "rclone_rerun",
                "ours_plain_full",
            ):
                figures.add(name, runs[name])
            figures.ratio("full_ours_over_restic", "ours_full", "restic_full")
            figures.ratio("full_ours_over_rclone", "ours_full", "rclone_full")
            figures.ratio("rerun_ours_over_restic", "ours_rerun", "restic_rerun")
            figures.ratio("plain_full_ours_over_rclone", "ours_plain_full", "rclone_full")

            # Restoring the whole tree, from each tool's first backup of it, five times at
            # least (one restore is seconds, and noisy). Each run writes a directory of its
            # own, all deleted after: ext4 creating an inode skips those deleted in the last
            # minute, one by one, so a restore right after an rmtree of 10,000 files spent a
            # third of its time in that scan (perf), a cost of the bench, not of the tool.
            restores = work / "restored"
            for i in range(max(args.runs, 5)):
                target = restores / f"ours-{i}"
                runs["ours_restore"].append(
                    measure(ours("restore", str(full["job_id"]), str(target)), env)
                )
                command = restic(
                    "restic-0", "restore", "latest", "--target", str(restores / f"restic-{i}")
                )
                runs["restic_restore"].append(measure(command, s3_env))
            shutil.rmtree(restores)
            figures.add("ours_restore", runs["ours_restore"])
            figures.add("restic_restore", runs["restic_restore"])
            figures.ratio("restore_ours_over_restic", "ours_restore", "restic_restore")

            if args.small_files:
                small = work / "small"
                make_small_tree(small, args.small_files)
                print(f"small_files={args.small_files}")
                for i in rounds:
                    command = ours("backup", str(small), "--bucket", f"small-{i}")
                    runs["ours_small_full"].append(measure(command, env, small))
                    new_restic(f"restic-small-{i}")
                    command = restic(f"restic-small-{i}", "backup", "--quiet", str(small))
                    runs["restic_small_full"].append(measure(command, s3_env, small))
                    if args.small_plain:  # packing off: one object per file, as rclone stores
                        command = ours(
                            "backup",
                            str(small),
                            "--bucket",
                            f"small-plain-{i}",
                            "--pack-threshold",
                            "0",
                        )
                        runs["ours_small_plain_full"].append(measure(command, env, small))
                        command = rclone_copy(small, f"rclone-small-{i}")
                        runs["rclone_small_full"].append(measure(command, rclone_env, small))
                figures.add("ours_small_full", runs["ours_small_full"])
                figures.add("restic_small_full", runs["restic_small_full"])
                figures.ratio("small_full_ours_over_restic", "ours_small_full", "restic_small_full")
                if args.small_plain:
                    figures.add("ours_small_plain_full", runs["ours_small_plain_full"])
                    figures.add("rclone_small_full", runs["rclone_small_full"])
                    figures.ratio(
                        "small_plain_full_ours_over_rclone",
                        "ours_small_plain_full",
                        "rclone_small_full",
                    )
                shutil.rmtree(small)

        for _ in rounds:
            target = work / "restored"
            command = ours("restore", str(full["job_id"]), str(target), "--prefix", "large/")
            runs["restore_large"].append(measure(command, env))
            shutil.rmtree(target)
        restored = json.loads(figures.add("restore_large", runs["restore_large"]).out)
        print(f"restore_large_files={restored['files']}")
        print(
            f"restore_large_mb_per_second={restored['bytes'] / 1e6 / figures.seconds['restore_large']:.0f}"
        )

        if args.empty_files:
            empty = work / "empty"
            for i in range(args.empty_files):
                directory = empty / f"d{i // 10_000:03}"
                if i % 10_000 == 0:
                    directory.mkdir(parents=True)
                os.close(os.open(directory / f"e{i:07}", os.O_CREAT | os.O_WRONLY, 0o644))
            run = measure(ours("backup", str(empty), "--bucket", "empty-files"), env, empty)
            print(f"empty_files={json.loads(run.out)['files_seen']}")
            print(f"empty_files_seconds={run.seconds:.1f}")
            print(f"empty_files_peak_rss_mb={run.rss_mb:.0f}")


if __name__ == "__main__":
    main()

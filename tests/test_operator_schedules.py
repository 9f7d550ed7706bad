"""BackupSchedule resources driven through the real Kopf operator. The clock is moved by
setting the schedule's `status.nextScheduleTime` into the past, as if time had passed."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import write
from operator_harness import JOBS, SCHEDULES, Operator, example, phase

from backup_operator.operator.backupschedules import next_fire, offset


def schedule_of(source: Path, bucket: str, **spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(example("backupschedule.yaml"))
    manifest["spec"].update(randomOffsetSeconds=0, successfulJobsHistoryLimit=2, **spec)
    manifest["spec"]["jobTemplate"]["spec"] = {"source": {"path": str(source)}, "bucket": bucket}
    return manifest


def fire(op: Operator, name: str, minutes_ago: int) -> None:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = json.dumps({"status": {"nextScheduleTime": at}})
    op.kubectl("patch", "bs", name, "--subresource=status", "--type=merge", "-p", patch)


def children(op: Operator, name: str) -> dict[str, dict[str, Any]]:
    return {
        n: o
        for n, o in op.api.objects(JOBS).items()
        if o["metadata"].get("labels", {}).get("minio-backup.dev/schedule") == name
    }


def test_the_next_firing_follows_the_cron_with_a_fixed_offset_per_schedule() -> None:
    after = datetime(2026, 11, 27, 1, 30, tzinfo=UTC)
    assert next_fire("0 2 * * *", after, "uid-a", 0) == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    late = next_fire("0 2 * * *", after, "uid-a", 600)
    assert late == datetime(2026, 11, 27, 2, 0, tzinfo=UTC) + offset("uid-a", 600)
    assert late == next_fire("0 2 * * *", after, "uid-a", 600)  # the same on every replica
    spreads = {offset(f"uid-{i}", 600) for i in range(50)}
    assert len(spreads) > 40 and all(timedelta() <= s <= timedelta(seconds=600) for s in spreads)


def test_a_schedule_creates_jobs_on_its_cron_and_prunes_old_ones(
    op: Operator, tmp_path: Path, bucket_name: str
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    manifest = schedule_of(tmp_path / "src", bucket_name)
    name = manifest["metadata"]["name"]
    op.apply(manifest)
    first = op.wait_for(
        SCHEDULES, name, lambda o: bool(o.get("status", {}).get("nextScheduleTime"))
    )
    assert first["status"]["nextScheduleTime"].endswith("T02:00:00Z")
    assert not children(op, name)
    created: list[str] = []
    for minutes_ago in (30, 20, 10):
        fire(op, name, minutes_ago)
        op.eventually(lambda: len(set(children(op, name)) - set(created)) == 1, "no new job")
        (new,) = set(children(op, name)) - set(created)
        created.append(new)
        op.wait_for(JOBS, new, lambda o: phase(o) == "Completed")
    # Only the newest two finished jobs stay as resources (their catalog records stay too).
    op.eventually(lambda: set(children(op, name)) == set(created[1:]), "not pruned")
    job = children(op, name)[created[-1]]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "BackupSchedule"
    assert job["spec"]["bucket"] == bucket_name
    done = op.get(SCHEDULES, name) or {}
    assert done["status"]["nextScheduleTime"] > done["status"]["lastScheduleTime"]
    op.wait_for_event(name, "Pruned")


def test_forbid_skips_a_firing_while_the_previous_job_is_unfinished(
    op: Operator, tmp_path: Path, bucket_name: str
) -> None:
    write(tmp_path / "src", "a.txt", b"a")
    manifest = schedule_of(tmp_path / "src", bucket_name)
    manifest["spec"]["jobTemplate"]["spec"]["startAt"] = "2099-01-01T00:00:00Z"  # stays Pending
    name = manifest["metadata"]["name"]
    op.apply(manifest)
    op.wait_for(SCHEDULES, name, lambda o: bool(o.get("status", {}).get("nextScheduleTime")))
    fire(op, name, 20)
    op.eventually(lambda: len(children(op, name)) == 1, "no job")
    fire(op, name, 10)
    op.wait_for_event(name, "Skipped")
    assert len(children(op, name)) == 1


def test_an_invalid_cron_is_reported_naming_the_field(op: Operator, tmp_path: Path) -> None:
    manifest = schedule_of(tmp_path, "some-bucket", schedule="61 * * * *")
    name = manifest["metadata"]["name"]
    op.apply(manifest)
    bad = op.wait_for(SCHEDULES, name, lambda o: bool(o.get("status", {}).get("conditions")))
    ready = bad["status"]["conditions"][0]
    assert ready["status"] == "False" and ready["message"].startswith("spec.schedule")

"""RetentionPolicy resources driven through the real Kopf operator."""

from __future__ import annotations

import copy
import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import (
    back_up,
    endpoint_of,
    frozen,
    migrated_catalog,
    plain,
    versions_of_one_file,
    write,
)
from operator_harness import JOBS, POLICIES, KubeNamespace, Operator, example, operator, phase
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.catalog.retention import governed_objects
from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3
from backup_operator.services.buckets import bucket_named, create_bucket
from backup_operator.storage import ObjectStore


def last_run(obj: dict) -> dict:  # type: ignore[type-arg]
    return dict((obj.get("status") or {}).get("lastRun") or {})


def test_a_retention_policy_dry_runs_then_deletes_exactly_the_old_versions(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    source = tmp_path / "src"
    for generation in range(3):  # 3 versions of config/app.yaml, one of config/keep.yaml
        write(source, "app.yaml", f"v{generation}".encode())
        write(source, "keep.yaml", b"same")
        back_up(sessions, store, bucket.id, source, prefix="config")
    versions = {(v.key, v.version_id) for v in store.list_versions(bucket_name, "config/")}
    assert len(versions) == 4

    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {
        "rules": {"keepLast": 1},
        "scope": {"bucket": bucket_name, "keyPrefix": "config/"},
        "interval": "1h",
        "dryRun": True,
    }
    op.apply(policy)
    name = policy["metadata"]["name"]
    dry = op.wait_for(POLICIES, name, lambda o: bool(last_run(o)))
    assert last_run(dry) == {
        "dryRun": True,
        "kept": 2,
        "deleted": 2,
        "jobsForgotten": 0,
        "bytesFreed": 4,
    }
    assert {(v.key, v.version_id) for v in store.list_versions(bucket_name, "config/")} == versions

    op.kubectl("patch", "rp", name, "--type=merge", "-p", json.dumps({"spec": {"dryRun": False}}))
    applied = op.wait_for(POLICIES, name, lambda o: last_run(o).get("dryRun") is False)
    assert last_run(applied)["deleted"] == 2 and last_run(applied)["bytesFreed"] == 4
    left = list(store.list_versions(bucket_name, "config/"))
    assert sorted(v.key for v in left) == ["config/app.yaml", "config/keep.yaml"]
    newest = next(v for v in left if v.key == "config/app.yaml")
    assert b"".join(store.content(bucket_name, "config/app.yaml", newest.version_id)) == b"v2"
    assert applied["status"]["nextRunAt"] > applied["status"]["lastRunAt"]
    op.wait_for_event(name, "Applied")


def test_a_policy_the_operator_cannot_act_on_is_not_ready_and_says_which_field(
    op: Operator, bucket_name: str
) -> None:
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {"rules": {"keepLast": 0, "keepForever": 1}}
    # A rule the CRD does not know: the API server itself refuses it, naming it.
    with pytest.raises(AssertionError, match=r'unknown field "spec\.rules\.keepForever"'):
        op.apply(policy)
    # One it cannot check (a time zone that does not exist): the operator says which.
    policy["spec"] = {"rules": {"keepDaily": 7, "timezone": "Mars/Olympus_Mons"}}
    ready = _refused(op, policy)
    assert ready["message"].startswith("spec.rules.timezone"), ready


def _refused(op: Operator, policy: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition of a policy the operator cannot act on: False, InvalidSpec."""
    op.apply(policy)
    name = policy["metadata"]["name"]
    bad = op.wait_for(POLICIES, name, lambda o: bool((o.get("status") or {}).get("conditions")))
    assert "policyId" not in bad["status"]
    ready: dict[str, Any] = bad["status"]["conditions"][0]
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec", ready
    return ready


def test_a_policy_scoped_to_another_namespaces_bucket_is_not_ready_and_says_why(
    op: Operator, bucket_name: str, sessions: sessionmaker[Session], store: ObjectStore
) -> None:
    with sessions() as session:
        bucket_named(session, store, bucket_name, create=True, namespace="another-team")
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {"rules": {"keepLast": 1}, "scope": {"bucket": bucket_name}}
    ready = _refused(op, policy)
    assert ready["message"].startswith("spec.scope.bucket: "), ready
    assert "belongs to namespace 'another-team'" in ready["message"]


def test_a_backup_job_naming_a_policy_puts_what_it_stored_under_it(
    op: Operator, tmp_path: Path, bucket_name: str, sessions: sessionmaker[Session]
) -> None:
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {"rules": {"keepLast": 2}}  # no scope: only what is attached to it
    op.apply(policy)
    op.wait_for(POLICIES, "config-history", lambda o: bool(o.get("status", {}).get("policyId")))
    write(tmp_path / "src", "a.txt", b"a")
    write(tmp_path / "src", "b.txt", b"b")
    write(tmp_path / "src", "same-as-a.txt", b"a")
    job = example("backupjob-path.yaml")  # names retentionPolicyRef config-history
    job["spec"].pop("startAt")
    job["spec"].update(source={"path": str(tmp_path / "src")}, bucket=bucket_name)
    op.apply(job)
    done = op.wait_for(JOBS, "shared-config", lambda o: phase(o) == "Completed")
    policy_id = op.get(POLICIES, "config-history")["status"]["policyId"]  # type: ignore[index]

    def governed() -> set[str]:
        with sessions() as session:
            page = governed_objects(session, policy_id, after=None, limit=100)
            return {o.key for o in page.items}

    op.eventually(
        lambda: governed() == {"config/a.txt", "config/b.txt"},
        f"the objects of job {done['status']['jobId']} are not governed by the policy",
    )


def test_require_dry_run_makes_the_first_run_after_a_change_a_dry_run(
    op: Operator,
    tmp_path: Path,
    bucket_name: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
) -> None:
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    versions_of_one_file(sessions, store, bucket.id, tmp_path / "src", 3, prefix="config")
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {
        "rules": {"keepLast": 1},
        "scope": {"bucket": bucket_name},
        "interval": "3s",
        "requireDryRun": True,
    }
    op.apply(policy)
    name = policy["metadata"]["name"]
    first = op.wait_for(POLICIES, name, lambda o: bool(last_run(o)))
    assert last_run(first)["dryRun"] is True and last_run(first)["deleted"] == 2
    assert first["status"]["lastDryRun"] == last_run(first)
    assert len(list(store.list_versions(bucket_name, "config/"))) == 3  # nothing deleted yet
    real = op.wait_for(POLICIES, name, lambda o: last_run(o).get("dryRun") is False)
    assert last_run(real)["deleted"] == 2
    assert len(list(store.list_versions(bucket_name, "config/"))) == 1


def test_a_retention_run_on_a_hung_store_stops_at_its_deadline_and_says_what_blocked_it(
    api: KubeNamespace,
    tmp_path: Path,
    db_url: str,
    private_s3: EmbeddedS3,
    private_store: ObjectStore,
    bucket_name: str,
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        bucket = create_bucket(session, private_store, name=bucket_name, object_lock=False)
    versions_of_one_file(sessions, private_store, bucket.id, tmp_path / "src", 3, "config")
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {"rules": {"keepLast": 1}, "scope": {"bucket": bucket_name}}
    name = policy["metadata"]["name"]
    s3 = endpoint_of(private_s3)
    with operator(api, tmp_path, db_url, s3, RETENTION_RUN_DEADLINE_SECONDS="2") as op:
        with frozen(private_s3):
            op.apply(policy)
            stopped = op.wait_for(POLICIES, name, lambda o: "error" in last_run(o))
            event = op.wait_for_event(name, "RunFailed")
        assert last_run(stopped) == {
            "dryRun": False,
            "error": "DeadlineExceeded: unfinished after 2s, "
            f"while deleting 2 versions from bucket {bucket_name}",
        }
        assert event["message"].endswith("; tried again in 60s")
        status = stopped["status"]
        retry = datetime.fromisoformat(status["nextRunAt"]) - datetime.fromisoformat(
            status["lastRunAt"]
        )
        assert retry == timedelta(minutes=1)  # not the policy's hour


def test_a_policy_deletion_held_by_a_database_outage_is_let_go_at_its_deadline_saying_why(
    api: KubeNamespace,
    tmp_path: Path,
    private_pg: EmbeddedPostgres,
    s3_endpoint: tuple[str, str, str],
) -> None:
    url = migrated_catalog(private_pg)
    policy = copy.deepcopy(example("retentionpolicy.yaml"))
    policy["spec"] = {"rules": {"keepLast": 1}, "dryRun": True}
    name = policy["metadata"]["name"]
    with operator(api, tmp_path, url, s3_endpoint, DELETION_DEADLINE_SECONDS="5") as op:
        op.apply(policy)
        policy_id = op.wait_for(POLICIES, name, lambda o: bool(last_run(o)))["status"]["policyId"]
        private_pg.stop()
        began = time.monotonic()
        op.kubectl("delete", "rp", name, "--wait=false")
        op.wait_gone(POLICIES, name, timeout=60)
        waited = time.monotonic() - began
        why = op.wait_for_event(name, "DeletionIncomplete")["message"]
    assert 5 <= waited < 30, why  # retried through the outage until the deadline, not forever
    assert why.startswith("gave up after 5s (DELETION_DEADLINE_SECONDS): ")
    assert "database" in why
    assert why.endswith(f"delete it with DELETE /retention-policies/{policy_id}")
    private_pg.start()
    with psycopg.connect(plain(url)) as conn:  # the catalog's policy is untouched
        found = conn.execute("SELECT count(*) FROM retention_policies WHERE id = %s", [policy_id])
        assert found.fetchone() == (1,)

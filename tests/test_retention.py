"""Retention policies: rules, dry run, apply against the real S3 server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from backup_operator.catalog.models import ObjectVersion
from backup_operator.retention import Rules, decide
from backup_operator.storage import ObjectStore

NOW = datetime(2026, 1, 31, tzinfo=UTC)


def ages(*days: int) -> list[tuple[int, datetime]]:
    return [(i, NOW - timedelta(days=d)) for i, d in enumerate(days)]


def kept(rules: Rules, versions: list[tuple[int, datetime]]) -> set[int]:
    return {d.version_id for d in decide(rules, versions, NOW) if d.keep}


def test_rules_combine_as_a_union() -> None:
    versions = ages(1, 5, 10, 40, 90)
    assert kept(Rules(keep_last=2), versions) == {0, 1}
    assert kept(Rules(max_age_days=30), versions) == {0, 1, 2}
    assert kept(Rules(keep_last=4, max_age_days=7), versions) == {0, 1, 2, 3}
    assert kept(Rules(), versions) == {0, 1, 2, 3, 4}
    reasons = {d.version_id: d.reasons for d in decide(Rules(keep_last=1), versions, NOW)}
    assert reasons[0] == ("keep_last 1: newest #1",)
    assert reasons[4] == ("beyond the newest 1",)


def make_versions(client: TestClient, new_job, backup_file, count: int) -> int:
    for i in range(count):
        backup_file(new_job()["id"], "db/dump.sql", f"dump {i}".encode())
    return int(client.get("/backup-objects/").json()[0]["id"])


def test_keep_last_dry_run_then_apply(
    client: TestClient, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    object_id = make_versions(client, new_job, backup_file, 4)
    versions = client.get(f"/backup-objects/{object_id}/versions").json()
    policy = client.post("/retention-policies/", json={"name": "last-two", "keep_last": 2}).json()
    assert client.post(
        f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]}
    ).json() == {"count": 1}

    plan = client.post(f"/retention-policies/{policy['id']}/dry-run").json()
    assert (plan["keep"], plan["delete"]) == (2, 2)
    doomed = {v["version"]["version_id"] for v in plan["versions"] if not v["keep"]}
    assert doomed == {versions[0]["version_id"], versions[1]["version_id"]}
    assert all(v["reasons"] for v in plan["versions"])
    assert len(list(store.list_versions(bucket["name"]))) == 4  # a dry run changes nothing

    applied = client.post(f"/retention-policies/{policy['id']}/apply").json()
    assert applied["deleted"] == 2 and applied["bytes_freed"] == 12
    remaining = {v.version_id for v in store.list_versions(bucket["name"])}
    assert remaining == {versions[2]["version_id"], versions[3]["version_id"]}
    history = client.get(f"/backup-objects/{object_id}/versions?include_deleted=true").json()
    assert [v["deleted_by_policy_id"] for v in history] == [policy["id"], policy["id"], None, None]

    again = client.post(f"/retention-policies/{policy['id']}/apply").json()
    assert again["deleted"] == 0


def test_max_age_deletes_only_old_versions(
    client: TestClient, session: Session, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    object_id = make_versions(client, new_job, backup_file, 3)
    versions = client.get(f"/backup-objects/{object_id}/versions").json()
    session.execute(
        update(ObjectVersion)
        .where(ObjectVersion.id == versions[0]["id"])
        .values(created_at=datetime.now(UTC) - timedelta(days=40))
    )
    session.commit()
    policy = client.post("/retention-policies/", json={"name": "month", "max_age_days": 30}).json()
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    applied = client.post(f"/retention-policies/{policy['id']}/apply").json()
    assert [v["version"]["version_id"] for v in applied["versions"]] == [versions[0]["version_id"]]
    assert len(list(store.list_versions(bucket["name"]))) == 2


def test_content_of_duplicates_is_never_deleted(
    client: TestClient, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    backup_file(new_job()["id"], "config", b"shared")
    backup_file(new_job()["id"], "config-copy", b"shared")  # a duplicate of the first version
    backup_file(new_job()["id"], "config", b"changed")
    object_id = client.get("/backup-objects/", params={"key_prefix": "config"}).json()[0]["id"]
    policy = client.post("/retention-policies/", json={"name": "one", "keep_last": 1}).json()
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    plan = client.post(f"/retention-policies/{policy['id']}/dry-run").json()
    assert plan["delete"] == 0
    assert any("duplicate" in r for v in plan["versions"] for r in v["reasons"])
    assert client.post(f"/retention-policies/{policy['id']}/apply").json()["deleted"] == 0
    assert len(list(store.list_versions(bucket["name"]))) == 2


def test_policy_crud_and_validation(client: TestClient, job: dict, backup_file) -> None:
    bad = client.post("/retention-policies/", json={"name": "zero", "keep_last": 0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["keep_last"]
    policy = client.post("/retention-policies/", json={"name": "p"}).json()
    assert client.post("/retention-policies/", json={"name": "p"}).status_code == 409
    changed = client.patch(f"/retention-policies/{policy['id']}", json={"max_age_days": 7})
    assert changed.json()["max_age_days"] == 7
    assert client.get("/retention-policies/").json()[0]["name"] == "p"

    empty = client.post("/retention-policies/", json={"name": "no-rules"}).json()
    backup_file(job["id"], "x", b"x")
    object_id = client.get("/backup-objects/").json()[0]["id"]
    client.post(f"/retention-policies/{empty['id']}/attach", json={"object_ids": [object_id]})
    plan = client.post(f"/retention-policies/{empty['id']}/dry-run").json()
    assert plan["delete"] == 0
    assert plan["versions"][0]["reasons"] == ["policy has no rules: nothing is deleted"]
    governed = client.get(f"/retention-policies/{empty['id']}/objects").json()
    assert [o["id"] for o in governed] == [object_id]
    assert client.post(
        f"/retention-policies/{empty['id']}/detach", json={"object_ids": [object_id]}
    ).json() == {"count": 1}
    missing = client.post(f"/retention-policies/{empty['id']}/attach", json={"object_ids": [999]})
    assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["object_ids"]
    assert client.delete(f"/retention-policies/{policy['id']}").status_code == 204
    assert client.get(f"/retention-policies/{policy['id']}").status_code == 404


def test_every_real_run_is_audited(client: TestClient, new_job, backup_file) -> None:
    object_id = make_versions(client, new_job, backup_file, 3)
    policy = client.post("/retention-policies/", json={"name": "audit", "keep_last": 1}).json()
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    client.post(f"/retention-policies/{policy['id']}/dry-run")  # not a run: not audited
    applied = client.post(f"/retention-policies/{policy['id']}/apply").json()
    client.post(f"/retention-policies/{policy['id']}/apply")

    runs = client.get("/retention-runs/", params={"policy_id": policy["id"]}).json()
    assert [(r["deleted"], r["kept"]) for r in runs] == [(2, 1), (0, 1)]
    first = runs[0]
    assert first["id"] == applied["run_id"] and first["policy_name"] == "audit"
    assert first["actor"] == "anonymous (no API tokens configured)"
    assert first["bytes_freed"] == 12 and first["finished_at"] is not None
    deleted = client.get(f"/retention-runs/{first['id']}/deleted").json()
    assert [v["deleted_by_run_id"] for v in deleted] == [first["id"]] * 2
    assert client.get(f"/retention-policies/{policy['id']}/runs").json() == runs

    client.delete(f"/retention-policies/{policy['id']}")  # the audit outlives the policy
    kept = client.get(f"/retention-runs/{first['id']}").json()
    assert kept["policy_id"] is None and kept["policy_name"] == "audit"
    assert client.get("/retention-runs/999").status_code == 404


def test_locked_versions_are_reported_never_attempted(
    client: TestClient, store: ObjectStore, bucket_name: str, backup_file
) -> None:
    from minio.commonconfig import GOVERNANCE
    from minio.retention import Retention

    bucket = client.post("/buckets/", json={"name": bucket_name, "object_lock": True}).json()
    jobs = [
        client.post(
            "/backup-jobs/",
            json={
                "job_name": "j",
                "source_system": "/",
                "bucket_id": bucket["id"],
                "source_type": "registered",
            },
        ).json()
        for _ in range(4)
    ]
    for i, job in enumerate(jobs):
        backup_file(job["id"], "ledger.db", f"ledger {i}".encode())
    object_id = client.get("/backup-objects/").json()[0]["id"]
    versions = [v["version_id"] for v in client.get(f"/backup-objects/{object_id}/versions").json()]
    store.client.enable_object_legal_hold(bucket_name, "ledger.db", version_id=versions[0])
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    store.client.set_object_retention(
        bucket_name, "ledger.db", Retention(GOVERNANCE, until), version_id=versions[1]
    )

    policy = client.post("/retention-policies/", json={"name": "lk", "keep_last": 1}).json()
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    applied = client.post(f"/retention-policies/{policy['id']}/apply").json()
    assert applied["locked"] == {
        versions[0]: "legal hold",
        versions[1]: f"GOVERNANCE retention until {until.isoformat()}",
    }
    assert [v["version"]["version_id"] for v in applied["versions"]] == [versions[2]]
    assert {v.version_id for v in store.list_versions(bucket_name)} == {
        versions[0],
        versions[1],
        versions[3],
    }
    run = client.get(f"/retention-runs/{applied['run_id']}").json()
    assert (run["deleted"], run["locked"]) == (1, 2)

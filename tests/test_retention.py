"""Retention policies: rules, dry run, apply against the real S3 server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backup_operator.catalog.models import ObjectVersion
from backup_operator.forget import Policy
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
    assert reasons[4] == ("no rule keeps it",)


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


def age_versions(session: Session, object_id: int, days_ago: list[float]) -> None:
    """Make an object's versions (oldest first) as old as given, newest last. Ages count
    back from noon of yesterday (UTC), so that whole days land on the calendar days
    meant whatever the time the test runs at (keep_daily counts calendar days)."""
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    anchor = noon - timedelta(days=1)
    versions = session.scalars(
        select(ObjectVersion.id)
        .where(ObjectVersion.object_id == object_id)
        .order_by(ObjectVersion.id)
    ).all()
    for version_id, days in zip(versions, days_ago, strict=True):
        session.execute(
            update(ObjectVersion)
            .where(ObjectVersion.id == version_id)
            .values(created_at=anchor - timedelta(days=days))
        )
    session.commit()


def test_restic_rules_on_versions(
    client: TestClient, session: Session, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    object_id = make_versions(client, new_job, backup_file, 5)
    age_versions(session, object_id, [30, 10.5, 10.2, 2.4, 2.1])  # days 30, 10, 10, 2, 2
    policy = client.post(
        "/retention-policies/", json={"name": "daily", "rules": {"keep_daily": 2}}
    ).json()
    assert policy["rules"] == {"keep_daily": 2}
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    plan = client.post(f"/retention-policies/{policy['id']}/dry-run").json()
    kept = [(v["version"]["id"], v["reasons"]) for v in plan["versions"] if v["keep"]]
    ids = [v["id"] for v in client.get(f"/backup-objects/{object_id}/versions").json()]
    # The newest of each of the two newest days.
    assert kept == [(ids[4], ["daily snapshot"]), (ids[2], ["daily snapshot"])]
    applied = client.post(f"/retention-policies/{policy['id']}/apply").json()
    assert applied["deleted"] == 3
    assert len(list(store.list_versions(bucket["name"]))) == 2


def test_min_versions_holds_whatever_the_rules_say(
    client: TestClient, session: Session, new_job, backup_file
) -> None:
    object_id = make_versions(client, new_job, backup_file, 4)
    age_versions(session, object_id, [40, 30, 20, 10])
    policy = client.post(
        "/retention-policies/", json={"name": "floor", "max_age_days": 5, "min_versions": 2}
    ).json()
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    plan = client.post(f"/retention-policies/{policy['id']}/dry-run").json()
    assert [v["reasons"] for v in plan["versions"] if v["keep"]] == [
        ["min_versions 2: newest #1"],
        ["min_versions 2: newest #2"],
    ]
    assert plan["delete"] == 2


def test_bad_rules_name_the_rule(client: TestClient) -> None:
    for rules, field in [
        ({"keep_dayly": 1}, "rules.keep_dayly"),
        ({"keep_within": "3 weeks"}, "rules.keep_within"),
        ({"keep_daily": "two"}, "rules.keep_daily"),
        ({"timezone": "Mars/Olympus"}, "rules.timezone"),
        ({"keep_tags": ["prod"]}, "rules.keep_tags"),
    ]:
        response = client.post("/retention-policies/", json={"name": "bad", "rules": rules})
        assert response.status_code == 422, rules
        assert response.json()["detail"][0]["loc"] == [field]
    floor = client.post("/retention-policies/", json={"name": "bad", "min_versions": 0})
    assert floor.json()["detail"][0]["loc"] == ["min_versions"]
    assert client.get("/retention-policies/").json() == []


versions_st = st.lists(
    st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 31), timezones=st.just(UTC)
    ),
    min_size=1,
    max_size=30,
    unique=True,
).map(lambda times: [(i, t) for i, t in enumerate(times)])


@settings(max_examples=200, deadline=None)
@given(
    versions=versions_st,
    floor=st.integers(min_value=1, max_value=10),
    daily=st.integers(min_value=0, max_value=5),
)
def test_min_versions_property(versions: list, floor: int, daily: int) -> None:
    rules = Rules(forget=Policy(keep_daily=daily), max_age_days=1, min_versions=floor)
    kept = [d for d in decide(rules, versions, datetime(2025, 6, 1, tzinfo=UTC)) if d.keep]
    assert len(kept) >= min(floor, len(versions))


@settings(max_examples=200, deadline=None)
@given(
    versions=versions_st,
    daily=st.integers(min_value=0, max_value=5),
    last=st.integers(min_value=1, max_value=5),
)
def test_adding_a_rule_never_deletes_more(versions: list, daily: int, last: int) -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    base = {
        d.version_id
        for d in decide(Rules(forget=Policy(keep_daily=daily)), versions, now)
        if d.keep
    }
    more = {
        d.version_id
        for d in decide(Rules(forget=Policy(keep_daily=daily), keep_last=last), versions, now)
        if d.keep
    }
    assert base <= more or daily == 0  # daily 0 alone is the empty policy: it keeps all


def test_scope_by_prefix_and_tags(
    client: TestClient, store: ObjectStore, bucket: dict, new_job, backup_file
) -> None:
    for i in range(3):
        job = new_job()["id"]
        for path in ("db/main.sql", "db/aux.sql", "www/index.html"):
            backup_file(job, path, f"{path} {i}".encode())
    by_key = {o["key"]: o["id"] for o in client.get("/backup-objects/").json()}
    client.put(f"/backup-objects/{by_key['db/main.sql']}/tags", json={"tags": {"tier": "gold"}})

    prefix = client.post(
        "/retention-policies/",
        json={
            "name": "db",
            "rules": {"keep_last": 1},
            "key_prefix": "db/",
            "bucket_id": bucket["id"],
        },
    ).json()
    plan = client.post(f"/retention-policies/{prefix['id']}/dry-run").json()
    assert {v["key"] for v in plan["versions"]} == {"db/main.sql", "db/aux.sql"}
    assert plan["delete"] == 4
    assert client.get(f"/retention-policies/{prefix['id']}/objects").json() == []  # dry run

    tagged = client.post(
        "/retention-policies/",
        json={"name": "gold", "rules": {"keep_last": 2}, "match_tags": {"tier": "gold"}},
    ).json()
    applied = client.post(f"/retention-policies/{tagged['id']}/apply").json()
    assert [v["key"] for v in applied["versions"]] == ["db/main.sql"]
    governed = client.get(f"/retention-policies/{tagged['id']}/objects").json()
    assert [o["key"] for o in governed] == ["db/main.sql"]  # recorded in object_retention
    keys = [v.key for v in store.list_versions(bucket["name"])]
    assert keys.count("db/main.sql") == 2 and keys.count("www/index.html") == 3
    missing = client.post("/retention-policies/", json={"name": "x", "bucket_id": 999})
    assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["bucket_id"]


def test_max_age_caps_what_rules_keep_but_not_min_versions(
    client: TestClient, session: Session, new_job, backup_file
) -> None:
    object_id = make_versions(client, new_job, backup_file, 4)
    age_versions(session, object_id, [40, 30, 20, 1])
    policy = client.post(
        "/retention-policies/",
        json={"name": "cap", "rules": {"keep_last": 4}, "max_age": "25d", "min_versions": 2},
    ).json()
    assert policy["max_age"] == "25d"
    client.post(f"/retention-policies/{policy['id']}/attach", json={"object_ids": [object_id]})
    plan = client.post(f"/retention-policies/{policy['id']}/dry-run").json()
    assert [(v["keep"], v["reasons"]) for v in plan["versions"]] == [
        (True, ["last snapshot", "min_versions 2: newest #1"]),
        (True, ["last snapshot", "min_versions 2: newest #2"]),
        (False, ["older than max_age 25d"]),
        (False, ["older than max_age 25d"]),
    ]
    bad = client.post("/retention-policies/", json={"name": "bad", "max_age": "soon"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["max_age"]


def test_uploads_through_the_api_are_locked_too(
    client: TestClient, store: ObjectStore, bucket_name: str, backup_file
) -> None:
    bucket = client.post("/buckets/", json={"name": bucket_name, "object_lock": True}).json()
    policy = client.post(
        "/retention-policies/",
        json={
            "name": "worm",
            "bucket_id": bucket["id"],
            "key_prefix": "audit/",
            "lock_mode": "COMPLIANCE",
            "lock_days": 1,
        },
    ).json()
    assert policy["lock_mode"] == "COMPLIANCE"
    job = client.post(
        "/backup-jobs/",
        json={
            "job_name": "j",
            "source_system": "/",
            "bucket_id": bucket["id"],
            "source_type": "registered",
        },
    ).json()
    backup_file(job["id"], "audit/2026.log", b"entries")
    backup_file(job["id"], "tmp/scratch", b"scratch")
    shown = {
        o["key"]: client.get(f"/backup-objects/{o['id']}/versions").json()[0]
        for o in client.get("/backup-objects/").json()
    }
    assert shown["audit/2026.log"]["lock_mode"] == "COMPLIANCE"
    assert shown["audit/2026.log"]["retain_until"] is not None
    assert shown["tmp/scratch"]["lock_mode"] is None
    assert (
        store.locked(
            bucket_name, "audit/2026.log", shown["audit/2026.log"]["version_id"], datetime.now(UTC)
        )
        is not None
    )


def test_the_api_refuses_to_apply_a_policy_requiring_a_dry_run_until_one_is_made(
    client: TestClient,
) -> None:
    created = client.post(
        "/retention-policies/",
        json={"name": "careful", "rules": {"keep_last": 1}, "require_dry_run": True},
    ).json()
    refused = client.post(f"/retention-policies/{created['id']}/apply")
    assert refused.status_code == 409
    assert refused.json()["detail"][0]["loc"][-1] == "require_dry_run"
    assert client.post(f"/retention-policies/{created['id']}/dry-run").status_code == 200
    shown = client.get(f"/retention-policies/{created['id']}").json()
    assert shown["dry_run_at"] >= shown["changed_at"]
    assert client.post(f"/retention-policies/{created['id']}/apply").status_code == 200

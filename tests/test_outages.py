"""PostgreSQL or the object store stopped mid-test: 503 with Retry-After, no traceback,
and nothing half-written."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backup_operator.api.app import create_app
from backup_operator.embedded import EmbeddedPostgres, EmbeddedS3

from .conftest import digest, make_settings, migrated_catalog, plain


def test_object_store_down(db_url: str, private_s3: EmbeddedS3, bucket_name: str) -> None:
    settings = make_settings(
        db_url, private_s3.endpoint, private_s3.access_key, private_s3.secret_key
    )
    with TestClient(create_app(settings)) as client:
        bucket = client.post("/buckets/", json={"name": bucket_name}).json()
        job = client.post(
            "/backup-jobs/", json={"job_name": "j", "source_system": "/", "bucket_id": bucket["id"]}
        ).json()
        file = client.post(
            "/files/", json={"job_id": job["id"], "path": "f", "size": 2, "sha256": digest(b"hi")}
        ).json()
        private_s3.stop()

        response = client.post("/buckets/", json={"name": bucket_name + "-2"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["detail"][0]["loc"] == ["object store"]
        assert [b["name"] for b in client.get("/buckets/").json()] == [bucket_name]

        upload = client.put(f"/files/{file['id']}/content", content=b"hi")
        assert upload.status_code == 503
        assert client.get(f"/files/{file['id']}").json()["object_version_id"] is None
        assert client.get("/backup-objects/").json() == []

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["object_store"].startswith("unavailable")

        private_s3.start()
        assert client.get("/readyz").status_code == 200
        assert client.put(f"/files/{file['id']}/content", content=b"hi").status_code == 201


def test_database_down(private_pg: EmbeddedPostgres, s3_endpoint: tuple[str, str, str]) -> None:
    url = migrated_catalog(private_pg)
    with TestClient(create_app(make_settings(url, *s3_endpoint))) as client:
        assert client.get("/buckets/").status_code == 200
        private_pg.stop()

        response = client.get("/buckets/")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert response.json()["detail"][0]["loc"] == ["database"]
        created = client.post("/buckets/", json={"name": "while-db-is-down"})
        assert created.status_code == 503
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["checks"]["database"].startswith("unavailable")

        private_pg.start()
        assert client.get("/buckets/").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_readiness_answers_within_two_seconds_on_a_hung_store(
    db_url: str, private_s3: EmbeddedS3
) -> None:
    import time

    from .conftest import endpoint_of, frozen

    # The uploads' timeout is long (a slow store is not a dead one); readiness is not.
    settings = make_settings(db_url, *endpoint_of(private_s3), minio_read_timeout_seconds=60)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        with frozen(private_s3):
            began = time.monotonic()
            ready = client.get("/readyz")
            waited = time.monotonic() - began
            assert client.get("/healthz").status_code == 200
            assert client.get("/buckets/").status_code == 200  # catalog-only: unaffected
        assert ready.status_code == 503 and waited < 2, waited
        assert ready.json()["checks"] == {
            "database": "ok",
            "object_store": ready.json()["checks"]["object_store"],
        }
        assert ready.json()["checks"]["object_store"].startswith("unavailable")
        assert client.get("/readyz").status_code == 200


def test_a_hung_store_holds_only_its_share_of_the_workers(
    db_url: str, private_s3: EmbeddedS3, bucket_name: str
) -> None:
    import threading
    import time

    from .conftest import endpoint_of, frozen

    settings = make_settings(
        db_url, *endpoint_of(private_s3), store_concurrency=2, minio_read_timeout_seconds=3
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/buckets/", json={"name": bucket_name}).status_code == 201
        with frozen(private_s3):
            hung = [
                threading.Thread(
                    target=client.post,
                    args=("/buckets/",),
                    kwargs={"json": {"name": f"{bucket_name}-{i}"}},
                )
                for i in range(2)
            ]
            for thread in hung:
                thread.start()
            slots = client.app.state.store_slots  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while slots._value > 0:  # until both wait on the store (a loaded machine is slow)
                assert time.monotonic() < deadline, "the two requests never reached the store"
                time.sleep(0.05)
            began = time.monotonic()
            third = client.post("/buckets/", json={"name": f"{bucket_name}-x"})
            assert third.status_code == 503 and time.monotonic() - began < 3
            assert "STORE_CONCURRENCY" in third.json()["detail"][0]["msg"]
            began = time.monotonic()
            listed = client.get("/buckets/")  # catalog only: served meanwhile
            assert listed.status_code == 200 and time.monotonic() - began < 1
            assert client.get("/healthz").status_code == 200
        for thread in hung:
            thread.join(60)
        assert client.post("/buckets/", json={"name": f"{bucket_name}-y"}).status_code == 201


def test_a_write_whose_commit_fails_answers_503_and_records_nothing(
    db_url: str, s3_endpoint: tuple[str, str, str], bucket_name: str
) -> None:
    # A request is one unit of work, committed before its response is sent: the client
    # of a commit that failed hears so, never a 201 for a job that was not recorded. The
    # failure is real: PostgreSQL ends the request's connection just before its COMMIT.
    import psycopg
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    with TestClient(create_app(make_settings(db_url, *s3_endpoint))) as client:
        bucket = client.post("/buckets/", json={"name": bucket_name}).json()
        doomed: list[str] = []

        def end_the_connection(session: Session) -> None:
            if doomed:
                doomed.pop()
                pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
                with psycopg.connect(plain(db_url), autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", [pid])

        event.listen(client.app.state.sessions, "before_commit", end_the_connection)
        doomed.append("the next commit")
        job = {"job_name": "lost", "source_system": "/", "bucket_id": bucket["id"]}
        response = client.post("/backup-jobs/", json=job)
        assert response.status_code == 503, response.text
        assert response.json()["detail"][0]["loc"] == ["database"]
        assert [j["job_name"] for j in client.get("/backup-jobs/").json()] == []
        assert client.post("/backup-jobs/", json=job).status_code == 201

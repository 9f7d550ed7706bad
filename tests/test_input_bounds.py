"""Input the catalog or S3 cannot hold is refused at the boundary with a 422 naming the
field, in the one error shape; the OpenAPI document says so, and declares the tokens."""

from __future__ import annotations

from fastapi.testclient import TestClient


def only_error(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    return dict(item)


def test_an_unknown_field_is_refused_not_dropped(client: TestClient, bucket: dict) -> None:
    # A misspelt start_time would otherwise run the job at once.
    error = only_error(
        client.post(
            "/backup-jobs/",
            json={
                "job_name": "later",
                "source_system": "/data",
                "bucket_id": bucket["id"],
                "start_tme": "2099-01-01T00:00:00Z",
            },
        )
    )
    assert error["loc"] == ["body", "start_tme"] and error["type"] == "extra_forbidden"
    assert client.get("/backup-jobs/").json() == []


def test_numbers_beyond_the_catalogs_columns_are_refused(client: TestClient) -> None:
    huge = 2**63
    assert only_error(client.get(f"/buckets/{huge}"))["loc"] == ["path", "bucket_id"]
    assert only_error(client.get(f"/files/?bucket_id={huge}"))["loc"] == ["query", "bucket_id"]
    assert only_error(client.get(f"/backup-jobs/?after={huge}"))["loc"] == ["query", "after"]
    assert client.get(f"/buckets/{huge - 1}").status_code == 404  # the largest id is fine


def test_a_nul_is_refused_wherever_it_is(client: TestClient, bucket: dict) -> None:
    error = only_error(client.post("/buckets/", json={"name": "a\u0000b"}))
    assert error["loc"] == ["body", "name"] and "NUL" in error["msg"]
    tagged = client.put("/backup-objects/1/tags", json={"tags": {"k": "v\u0000"}})
    assert only_error(tagged)["loc"] == ["body", "tags", "k"]
    assert only_error(client.get("/files/?path_prefix=a%00"))["loc"] == ["query", "path_prefix"]
    assert [b["name"] for b in client.get("/buckets/").json()] == [bucket["name"]]


def test_every_error_has_the_one_shape(client: TestClient) -> None:
    broken = client.post(
        "/buckets/", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422 or broken.status_code == 400
    (item,) = broken.json()["detail"]
    assert set(item) >= {"loc", "msg", "type"}


def test_the_openapi_document_declares_tokens_and_error_answers(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "API_TOKENS or API_READ_ONLY_TOKENS",
    }
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    answers = schema["paths"]["/buckets/{bucket_id}"]["get"]["responses"]
    assert {"401", "403", "404", "422", "503"} <= set(answers)
    assert answers["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_what_s3_would_refuse_is_refused_before_anything_is_stored(
    client: TestClient, bucket: dict, job: dict
) -> None:
    for name in ["xn--bucket", "sthree-data", "data-s3alias", "data--ol-s3"]:
        assert only_error(client.post("/buckets/", json={"name": name}))["loc"] == ["name"]
    for path in ["a/../b", "./a", "a//b", "x" * 1100]:
        body = {"job_id": job["id"], "path": path, "size": 1, "sha256": "0" * 64}
        assert only_error(client.post("/files/", json=body))["loc"] == ["path"], path
    batch = {
        "job_id": job["id"],
        "files": [
            {"path": "fine.txt", "size": 1, "sha256": "0" * 64},
            {"path": "bad/..", "size": 1, "sha256": "1" * 64},
        ],
    }
    assert only_error(client.post("/files/batch", json=batch))["loc"] == ["files.1.path"]
    assert client.get(f"/files/?job_id={job['id']}").json() == []  # all or nothing
    job_body = {
        "job_name": "j",
        "source_system": "/data",
        "bucket_id": bucket["id"],
        "key_prefix": "../up",
    }
    assert only_error(client.post("/backup-jobs/", json=job_body))["loc"] == ["key_prefix"]
    assert [j["key_prefix"] for j in client.get("/backup-jobs/").json()] == [""]

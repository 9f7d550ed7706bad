"""The web interface in a real browser: Playwright drives Debian's Chromium (headless)
against the API served by uvicorn, with real backups in PostgreSQL and S3. Screenshots
of the pages land in the test's directory (the README's is docs/ui-source.png)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.api.ui.pages import size
from backup_operator.catalog.models import BackupObject, JobStatus
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore

from .conftest import back_up, keep_newest_job, serving, write

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the networking flags Chromium keeps trying Google's hosts, which a closed
# network refuses; as root it needs --no-sandbox.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READ_WRITE, READ_ONLY = "ui-rw-token", "ui-ro-token"

playwright_api = pytest.importorskip("playwright.sync_api")  # a test extra: always there


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def site(settings: Settings) -> Iterator[str]:
    locked = settings.model_copy(
        update={
            "api_tokens": Settings(api_tokens=READ_WRITE).api_tokens,
            "api_read_only_tokens": Settings(api_read_only_tokens=READ_ONLY).api_read_only_tokens,
        }
    )
    with serving(create_app(locked)) as base:
        yield base


@pytest.fixture
def page(browser: object, site: str) -> Iterator[object]:
    context = browser.new_context(base_url=site)  # type: ignore[attr-defined]
    yield context.new_page()
    context.close()


def sign_in(page: object, token: str) -> None:
    page.goto("/ui/")  # type: ignore[attr-defined]
    assert "/ui/login" in page.url  # type: ignore[attr-defined]
    page.get_by_label("API token").fill(token)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]


def test_a_signed_in_user_sees_each_source_its_newest_backup_and_its_history(
    page: object,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    for index in range(12):
        write(source, f"docs/file-{index}.txt", f"content {index}".encode())
    write(source, "copy.txt", b"content 0")  # a duplicate: saved by dedup
    first, _ = back_up(sessions, store, bucket_id, source)
    write(source, "docs/file-0.txt", b"changed")
    second, stats = back_up(sessions, store, bucket_id, source)

    sign_in(page, READ_ONLY)  # a read-only token sees everything
    table = page.get_by_role("table", name="Every source backed up")  # type: ignore[attr-defined]
    row = table.get_by_role("row").filter(has_text=str(source))
    bucket_shown, count, _, outcome, files, _, saved = row.get_by_role("cell").all_inner_texts()
    assert (bucket_shown, count, outcome, files) == (bucket_name, "2", "completed", "13")
    assert saved == size(stats.bytes_saved)
    page.screenshot(path=tmp_path / "ui-overview.png", full_page=True)  # type: ignore[attr-defined]

    row.get_by_role("link", name=str(source)).click()
    jobs = page.get_by_role("table", name="Backups of this source")  # type: ignore[attr-defined]
    assert jobs.get_by_role("rowheader").all_inner_texts() == [str(second), str(first)]
    newest = jobs.get_by_role("row").filter(has=page.get_by_role("rowheader", name=str(second)))  # type: ignore[attr-defined]
    assert newest.get_by_role("cell").nth(6).inner_text() == "1"  # changed: file-0
    timeline = page.get_by_role("img", name="The jobs below")  # type: ignore[attr-defined]
    assert timeline.locator("rect").count() == 2
    page.screenshot(path=tmp_path / "ui-source.png", full_page=True)  # type: ignore[attr-defined]

    # Filtering by outcome, keyboard only.
    outcome_filter = page.get_by_label("Outcome")  # type: ignore[attr-defined]
    outcome_filter.focus()
    outcome_filter.select_option(JobStatus.FAILED.value)
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/sources/*?status=failed")  # type: ignore[attr-defined]
    assert page.get_by_text("No job ended failed.").is_visible()  # type: ignore[attr-defined]


def test_without_a_valid_token_every_page_leads_to_the_login(page: object) -> None:
    page.goto("/ui/sources/1")  # type: ignore[attr-defined]
    assert page.url.endswith("/ui/login?next=%2Fui%2Fsources%2F1")  # type: ignore[attr-defined]
    page.get_by_label("API token").fill("not-a-token")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    assert page.get_by_role("alert").inner_text() == (  # type: ignore[attr-defined]
        "That token is not one of this service's API tokens."
    )
    page.get_by_label("API token").fill(READ_WRITE)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    # Signed in, it goes on to the page asked for (no such source: the API's 404).
    page.wait_for_url("**/ui/sources/1")  # type: ignore[attr-defined]
    page.goto("/ui/")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign out").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/login")  # type: ignore[attr-defined]
    page.goto("/ui/")  # type: ignore[attr-defined]
    assert "/ui/login" in page.url  # type: ignore[attr-defined]


def test_a_jobs_tree_is_browsed_by_folder_and_its_files_come_back_byte_for_byte(
    page: object,
    site: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    write(source, "docs/report.txt", b"first draft")
    write(source, "docs/deep/notes.md", b"# notes")
    write(source, "top.txt", b"top")
    large = os.urandom(300_000)  # over the pack threshold: an S3 object of its own
    write(source, "images/photo.raw", large)
    for index in range(10_000):  # a 10,000-file job: 100 folders of 100 files
        write(source, f"bulk/{index % 100:02}/file-{index:05}.txt", f"{index}".encode())
    back_up(sessions, store, bucket_id, source, pack_threshold=65_536)
    write(source, "docs/report.txt", b"final text")
    (source / "top.txt").unlink()
    write(source, "new.txt", b"new")
    second, _ = back_up(sessions, store, bucket_id, source, pack_threshold=65_536)

    sign_in(page, READ_ONLY)
    page.get_by_role("link", name=str(source)).click()  # type: ignore[attr-defined]
    page.get_by_role("link", name=str(second), exact=True).click()  # type: ignore[attr-defined]
    entries = page.get_by_role("table", name="The folder's entries")  # type: ignore[attr-defined]
    rows = entries.locator("tbody tr")
    assert rows.all_inner_texts() == [
        "bulk/\tfolder\t\t",
        "docs/\tfolder\t\t",
        "images/\tfolder\t\t",
        "new.txt\tnew\t3 B\tdetails",
        "top.txt\tdeleted\t\t",
    ]
    page.screenshot(path=tmp_path / "ui-tree.png", full_page=True)  # type: ignore[attr-defined]
    entries.get_by_role("link", name="bulk/").click()
    page.get_by_role("link", name="42/").click()  # type: ignore[attr-defined]
    assert rows.count() == 100
    assert rows.nth(0).inner_text() == "file-00042.txt\tunchanged\t2 B\tdetails"
    page.goto(f"/ui/jobs/{second}/tree")  # type: ignore[attr-defined]

    entries.get_by_role("link", name="docs/").click()
    page.wait_for_url("**/tree?path=docs/")  # type: ignore[attr-defined]
    assert rows.all_inner_texts() == ["deep/\tfolder\t\t", "report.txt\tchanged\t10 B\tdetails"]
    with page.expect_download() as packed:  # type: ignore[attr-defined]
        entries.get_by_role("link", name="report.txt", exact=True).click()
    assert Path(packed.value.path()).read_bytes() == b"final text"
    assert packed.value.suggested_filename == "report.txt"
    with page.expect_download() as folder_zip:  # type: ignore[attr-defined]
        page.get_by_role("link", name="Download this folder as ZIP").click()  # type: ignore[attr-defined]
    assert folder_zip.value.suggested_filename == "docs.zip"
    with zipfile.ZipFile(folder_zip.value.path()) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == {
            "deep/notes.md": b"# notes",
            "report.txt": b"final text",
        }

    # A deep link to a folder, and back up through the breadcrumbs.
    page.goto(f"/ui/jobs/{second}/tree?path=images/")  # type: ignore[attr-defined]
    with page.expect_download() as own:  # type: ignore[attr-defined]
        entries.get_by_role("link", name="photo.raw", exact=True).click()
    assert Path(own.value.path()).read_bytes() == large  # straight from S3 (presigned)
    assert not own.value.url.startswith(site)  # from S3 itself, by its presigned URL
    assert "X-Amz-Signature=" in own.value.url and "versionId=" in own.value.url
    page.get_by_role("navigation", name="Breadcrumb").get_by_role(
        "link", name=f"job {second}"
    ).click()  # type: ignore[attr-defined]
    page.wait_for_url(f"**/ui/jobs/{second}/tree")  # type: ignore[attr-defined]
    assert rows.count() == 5

    # What changed since the job before it.
    page.get_by_role("link", name="Compare with the job before it").click()  # type: ignore[attr-defined]
    changes = page.get_by_role("table", name="Files added, changed and deleted")  # type: ignore[attr-defined]
    assert sorted(changes.locator("tbody tr").all_inner_texts()) == [
        "docs/report.txt\tchanged\t11 B\t10 B",
        "new.txt\tadded\t\t3 B",
        "top.txt\tdeleted\t3 B\t",
    ]
    page.screenshot(path=tmp_path / "ui-compare.png", full_page=True)  # type: ignore[attr-defined]


def test_a_read_write_token_edits_an_objects_tags_and_a_read_only_one_cannot(
    browser: object,
    site: str,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    write(source, "report.pdf", b"%PDF-1.7 quarterly")
    job_id, _ = back_up(sessions, store, bucket_id, source)
    details = f"/ui/jobs/{job_id}/file?path=report.pdf"

    reader = browser.new_context(base_url=site).new_page()  # type: ignore[attr-defined]
    sign_in(reader, READ_ONLY)
    reader.goto(details)
    assert reader.get_by_text("Its S3 object has no tags.").is_visible()
    assert reader.get_by_text("Signed in with a read-only token").is_visible()
    assert reader.get_by_label("Tags, one a line").count() == 0
    refused = reader.request.post(
        "/ui/objects/1/tags", form={"tags": "team=intruders"}, max_redirects=0
    )
    assert refused.status == 403

    writer = browser.new_context(base_url=site).new_page()  # type: ignore[attr-defined]
    sign_in(writer, READ_WRITE)
    writer.goto(details)
    writer.get_by_label("Tags, one a line").fill("team=finance\nkeep=7y")
    writer.get_by_role("button", name="Save the tags").click()
    shown = writer.get_by_role("table", name="The tags of its S3 object")
    assert shown.get_by_role("row").all_inner_texts()[1:] == ["keep\t7y", "team\tfinance"]
    (version,) = [v for v in store.list_versions(bucket_name) if v.key.endswith("report.pdf")]
    assert store.get_tags(bucket_name, version.key, version.version_id) == {
        "keep": "7y",
        "team": "finance",
    }
    writer.screenshot(path=tmp_path / "ui-file.png", full_page=True)

    # A line that is not key=value is refused, naming the field; the tags stay.
    writer.get_by_label("Tags, one a line").fill("no equals sign here")
    writer.get_by_role("button", name="Save the tags").click()
    assert writer.get_by_role("alert").inner_text() == (
        "'no equals sign here': one tag a line, as key=value (field: tags)"
    )
    assert store.get_tags(bucket_name, version.key, version.version_id)["team"] == "finance"

    # Restore the file to the server, under RESTORE_ROOTS only; a read-only token has no
    # form for it.
    assert reader.get_by_role("button", name="Restore").count() == 0
    writer.goto(details)
    target = tmp_path / "restored"
    writer.get_by_label("Restore this file into").fill(str(target))
    writer.get_by_role("button", name="Restore").click()
    assert writer.get_by_role("heading", name="Restored").is_visible()
    assert (target / "report.pdf").read_bytes() == b"%PDF-1.7 quarterly"
    writer.goto(details)
    writer.get_by_label("Restore this file into").fill("/etc/restored-here")
    writer.get_by_role("button", name="Restore").click()
    assert "RESTORE_ROOTS" in writer.get_by_role("alert").inner_text()
    assert "(field: target)" in writer.get_by_role("alert").inner_text()
    assert not Path("/etc/restored-here").exists()


def test_a_policys_plan_is_drawn_as_points_kept_and_deleted_with_their_reasons(
    page: object,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    backups = []
    for round_ in range(3):
        write(source, "f.txt", f"round {round_}".encode())
        backups.append(back_up(sessions, store, bucket_id, source)[0])
    with sessions() as session:
        keep_newest_job(session, bucket_id, source, name="keep-newest")

    sign_in(page, READ_ONLY)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Retention").click()  # type: ignore[attr-defined]
    page.get_by_role("link", name="keep-newest").click()  # type: ignore[attr-defined]
    plan = page.get_by_role("table", name="The plan's points")  # type: ignore[attr-defined]
    rows = [row.split("\t") for row in plan.locator("tbody tr").all_inner_texts()]
    assert [(what, outcome) for _, what, outcome, _ in rows] == [
        (f"job {backups[2]}", "kept"),
        (f"job {backups[1]}", "deleted"),
        (f"job {backups[0]}", "deleted"),
    ]
    assert all(why for *_, why in rows)  # each point says why
    drawn = page.get_by_role("img", name="The points of the plan")  # type: ignore[attr-defined]
    assert (drawn.locator("circle.kept").count(), drawn.locator("circle.deleted").count()) == (1, 2)
    page.screenshot(path=tmp_path / "ui-policy.png", full_page=True)  # type: ignore[attr-defined]


def test_a_file_is_found_across_backups_from_the_overview(
    page: object,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    write(source, "finance/Budget-2026.xlsx", b"draft")
    first, _ = back_up(sessions, store, bucket_id, source)
    write(source, "finance/Budget-2026.xlsx", b"final numbers")
    second, _ = back_up(sessions, store, bucket_id, source)

    sign_in(page, READ_ONLY)
    page.get_by_label("Find a file in every backup").fill("budget")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url("**/ui/search?q=budget")  # type: ignore[attr-defined]
    found = page.get_by_role("table", name="Files whose path holds")  # type: ignore[attr-defined]
    rows = found.locator("tbody tr")
    assert rows.count() == 2  # two contents, one path
    assert rows.nth(0).inner_text().split("\t")[0] == "finance/Budget-2026.xlsx"
    assert rows.nth(0).get_by_role("link", name=str(first)).count() == 1
    rows.nth(1).get_by_role("link", name=str(second)).click()
    page.wait_for_url(f"**/ui/jobs/{second}/file?path=finance**")  # type: ignore[attr-defined]
    assert page.get_by_role("heading", name="finance/Budget-2026.xlsx").is_visible()  # type: ignore[attr-defined]
    page.screenshot(path=tmp_path / "ui-file-found.png", full_page=True)  # type: ignore[attr-defined]


def test_a_form_posted_from_another_site_changes_nothing(
    browser: object,
    settings: Settings,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    bucket_name: str,
    bucket_id: int,
    tmp_path: Path,
) -> None:
    # Without tokens the interface is open on loopback; a page of another site that a
    # user of this machine visits must still not be able to post its forms.
    source = tmp_path / "data"
    write(source, "a.txt", b"a")
    back_up(sessions, store, bucket_id, source)
    (version,) = store.list_versions(bucket_name)
    with sessions() as session:
        object_id = session.scalars(select(BackupObject.id)).one()
    with serving(create_app(settings)) as open_site:
        context = browser.new_context(base_url=open_site)  # type: ignore[attr-defined]
        evil = context.request.post(
            f"/ui/objects/{object_id}/tags",
            form={"tags": "owned=yes"},
            headers={"Origin": "http://evil.example"},
            max_redirects=0,
        )
        assert evil.status == 403
        assert "another site" in evil.text()
        ours = context.request.post(
            f"/ui/objects/{object_id}/tags",
            form={"tags": "team=ops", "back": "/ui/"},
            headers={"Origin": open_site},
            max_redirects=0,
        )
        assert ours.status == 303
        context.close()
    assert store.get_tags(bucket_name, version.key, version.version_id) == {"team": "ops"}

"""The web interface in a real browser: Playwright drives Debian's Chromium (headless)
against the API served by uvicorn, with real backups in PostgreSQL and S3. Screenshots
of the pages land in the test's directory (the README's is docs/ui-source.png)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from backup_operator.api.app import create_app
from backup_operator.api.ui.pages import size
from backup_operator.catalog.models import JobStatus
from backup_operator.services.buckets import create_bucket
from backup_operator.settings import Settings
from backup_operator.storage import ObjectStore

from .conftest import back_up, serving, write

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
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    for index in range(12):
        write(source, f"docs/file-{index}.txt", f"content {index}".encode())
    write(source, "copy.txt", b"content 0")  # a duplicate: saved by dedup
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    first, _ = back_up(sessions, store, bucket.id, source)
    write(source, "docs/file-0.txt", b"changed")
    second, stats = back_up(sessions, store, bucket.id, source)

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
    bucket_name: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "data"
    write(source, "docs/report.txt", b"first draft")
    write(source, "docs/deep/notes.md", b"# notes")
    write(source, "top.txt", b"top")
    large = os.urandom(300_000)  # over the pack threshold: an S3 object of its own
    write(source, "images/photo.raw", large)
    with sessions() as session:
        bucket = create_bucket(session, store, name=bucket_name, object_lock=False)
    back_up(sessions, store, bucket.id, source, pack_threshold=65_536)
    write(source, "docs/report.txt", b"final text")
    (source / "top.txt").unlink()
    write(source, "new.txt", b"new")
    second, _ = back_up(sessions, store, bucket.id, source, pack_threshold=65_536)

    sign_in(page, READ_ONLY)
    page.get_by_role("link", name=str(source)).click()  # type: ignore[attr-defined]
    page.get_by_role("link", name=str(second), exact=True).click()  # type: ignore[attr-defined]
    entries = page.get_by_role("table", name="The folder's entries")  # type: ignore[attr-defined]
    rows = entries.locator("tbody tr")
    assert rows.all_inner_texts() == [
        "docs/\tfolder\t",
        "images/\tfolder\t",
        "new.txt\tnew\t3 B",
        "top.txt\tdeleted\t",
    ]
    page.screenshot(path=tmp_path / "ui-tree.png", full_page=True)  # type: ignore[attr-defined]

    entries.get_by_role("link", name="docs/").click()
    page.wait_for_url("**/tree?path=docs/")  # type: ignore[attr-defined]
    assert rows.all_inner_texts() == ["deep/\tfolder\t", "report.txt\tchanged\t10 B"]
    with page.expect_download() as packed:  # type: ignore[attr-defined]
        entries.get_by_role("link", name="report.txt").click()
    assert Path(packed.value.path()).read_bytes() == b"final text"
    assert packed.value.suggested_filename == "report.txt"

    # A deep link to a folder, and back up through the breadcrumbs.
    page.goto(f"/ui/jobs/{second}/tree?path=images/")  # type: ignore[attr-defined]
    with page.expect_download() as own:  # type: ignore[attr-defined]
        entries.get_by_role("link", name="photo.raw").click()
    assert Path(own.value.path()).read_bytes() == large  # straight from S3 (presigned)
    assert not own.value.url.startswith(site)  # from S3 itself, by its presigned URL
    assert "X-Amz-Signature=" in own.value.url and "versionId=" in own.value.url
    page.get_by_role("navigation", name="Breadcrumb").get_by_role(
        "link", name=f"job {second}"
    ).click()  # type: ignore[attr-defined]
    page.wait_for_url(f"**/ui/jobs/{second}/tree")  # type: ignore[attr-defined]
    assert rows.count() == 4

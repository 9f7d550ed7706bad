"""A schema fuzzer over the live API: schemathesis, all operations and phases (examples,
coverage, fuzzing, stateful links), with a read-write token, against real PostgreSQL and
S3. It fails on any 5xx and on any response the OpenAPI document does not describe.
Its settings and seed are in tests/schemathesis.toml."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from backup_operator.api.app import create_app
from backup_operator.embedded import free_port
from backup_operator.settings import Settings

CONFIG = Path(__file__).with_name("schemathesis.toml")
TOKEN = "fuzz-read-write-token"


@pytest.fixture
def live_api(settings: Settings, tmp_path: Path) -> Iterator[str]:
    secured = settings.model_copy(
        update={
            "api_tokens": Settings(api_tokens=TOKEN).api_tokens,
            # Whatever the fuzzer asks, nothing outside these is read or written.
            "restore_roots": [tmp_path / "restores"],
            "source_roots": [tmp_path / "sources"],
        }
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(secured), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def by_hand_options() -> list[str]:
    """Another seed or more cases than the config's, to search further by hand."""
    given = {"--seed": "FUZZ_SEED", "--max-examples": "FUZZ_MAX_EXAMPLES"}
    return [
        part
        for option, name in given.items()
        if os.environ.get(name)
        for part in (option, os.environ[name])
    ]


def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    live_api: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{live_api}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            *by_hand_options(),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    (tmp_path / "schemathesis.txt").write_text(done.stdout)
    summary = done.stdout[done.stdout.find("SUMMARY") :]
    print(summary)  # operations, phases, cases: shown with -s or on failure
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]

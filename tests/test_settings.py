"""Settings from the environment, with the original design's variable names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_operator.settings import Settings


def test_defaults_of_the_original_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        "MINIO_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_SECURE",
        "SQLALCHEMY_DATABASE_URL",
    ]:
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.minio_endpoint == "localhost:9000"
    assert settings.minio_access_key.get_secret_value() == "minioadmin"
    assert settings.minio_secret_key.get_secret_value() == "minioadmin"
    assert settings.minio_secure is False
    assert settings.sqlalchemy_database_url is None


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "minio.backup.svc:9000")
    monkeypatch.setenv("MINIO_SECURE", "true")
    monkeypatch.setenv("SQLALCHEMY_DATABASE_URL", "postgresql://u:p@db:5432/catalog")
    settings = Settings()
    assert settings.minio_endpoint == "minio.backup.svc:9000" and settings.minio_secure
    assert settings.database_url() == "postgresql+psycopg://u:p@db:5432/catalog"
    assert "p@db" not in repr(settings)  # secrets stay out of logs


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "SQLALCHEMY_", "API_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "backup_operator", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MINIO_SECURE", "maybe"),
        ("SQLALCHEMY_DATABASE_URL", "mysql://x/y"),
        ("MINIO_ENDPOINT", "http://minio:9000"),
        ("PORT", "99999"),
    ],
)
def test_invalid_settings_stop_the_process_naming_the_variable(variable: str, value: str) -> None:
    result = run_cli("migrate", **{"SQLALCHEMY_DATABASE_URL": "postgresql://x/y", variable: value})
    assert result.returncode == 2
    assert f"invalid setting {variable}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serving_without_a_database_url_says_so() -> None:
    result = run_cli("serve")
    assert result.returncode == 2
    assert "SQLALCHEMY_DATABASE_URL is not set" in result.stderr


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert missing == []

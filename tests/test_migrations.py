"""Alembic: upgrade from empty, downgrade to empty, and the models match the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backup_operator.catalog.models import Base
from backup_operator.migrate import downgrade, upgrade

TABLES = {
    "buckets",
    "backup_jobs",
    "files",
    "backup_objects",
    "object_versions",
    "tags",
    "retention_policies",
    "object_retention",
}


def test_migrations_match_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert diff == []


def test_downgrade_then_upgrade(db_url: str) -> None:
    engine = create_engine(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    downgrade(db_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    columns = {c["name"]: c for c in inspect(engine).get_columns("backup_jobs")}
    assert columns["created_at"]["type"].timezone is True
    engine.dispose()

"""Alembic environment: the URL comes from the same settings object as the service."""

from alembic import context
from sqlalchemy import create_engine, pool

from backup_operator.catalog.models import Base
from backup_operator.settings import get_settings

config = context.config
url = config.attributes.get("url") or get_settings().database_url()

connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        # Serialise concurrent migrators (several replicas starting at once).
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7412001)")
        context.run_migrations()

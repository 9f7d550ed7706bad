"""Catalog: SQLAlchemy models and repository functions over PostgreSQL."""

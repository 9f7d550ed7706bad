"""Backup metadata catalog, object storage and engine for MinIO."""

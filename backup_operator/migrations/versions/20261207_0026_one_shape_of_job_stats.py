"""Job statistics in one shape (JobStats, version 2): registered jobs said `files` and
`duplicates` where directory jobs said `files_seen` and `duplicate`.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 02:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        UPDATE backup_jobs
        SET stats = (stats - 'files' - 'duplicates')
            || jsonb_build_object('files_seen', stats->'files', 'duplicate', stats->'duplicates')
        WHERE source_type = 'registered' AND stats ? 'files'
    """)
    op.execute("""
        UPDATE backup_jobs SET stats = stats || '{"version": 2}'::jsonb
        WHERE stats <> '{}'::jsonb
    """)


def downgrade() -> None:
    # What version 1 had: the keys a run wrote (version 2 writes every key).
    op.execute("""
        UPDATE backup_jobs
        SET stats = jsonb_build_object(
            'files', stats->'files_seen', 'duplicates', stats->'duplicate',
            'pending_upload', stats->'pending_upload', 'bytes', stats->'bytes',
            'bytes_saved', stats->'bytes_saved')
        WHERE source_type = 'registered' AND stats ? 'files_seen'
    """)
    op.execute("""
        UPDATE backup_jobs SET stats = stats - 'version' - 'pending_upload' - 'bytes'
        WHERE source_type = 'directory'
    """)

"""Job changes are announced as they commit: a trigger on backup_jobs NOTIFYs the channel
`backup_job_changed` with the job's id, so that the operator mirrors a job into its
resource's status when it changes instead of asking every second. Heartbeats are not
changes (they would wake every follower every few seconds for nothing).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION backup_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND (
                OLD.status, OLD.error, OLD.stats, OLD.attempts, OLD.start_time,
                OLD.started_at, OLD.completed_at
            ) IS NOT DISTINCT FROM (
                NEW.status, NEW.error, NEW.stats, NEW.attempts, NEW.start_time,
                NEW.started_at, NEW.completed_at
            ) THEN
                RETURN NULL;
            END IF;
            PERFORM pg_notify('backup_job_changed', NEW.id::text);
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER backup_job_changed AFTER INSERT OR UPDATE ON backup_jobs
        FOR EACH ROW EXECUTE FUNCTION backup_job_changed()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER backup_job_changed ON backup_jobs")
    op.execute("DROP FUNCTION backup_job_changed()")

"""A login of its own for each job run outside the operator (a PVC backup pod): a
PostgreSQL role that row-level security (migration 0023) confines to the job's bucket,
valid until the job ends. The catalog's own URL never leaves the operator.

Issuing needs a catalog user with CREATEROLE (PostgreSQL 16+: it may then manage only
the roles it made, which is all this needs)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psycopg
from psycopg import sql
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ..errors import Unavailable
from .jobs import get_job
from .models import JobCredential

# The tables a backup reads and writes; which rows, row-level security decides.
READS = ("buckets", "retention_policies")
READS_AND_UPDATES = ("backup_jobs",)
WRITES = (
    "sources",
    "files",
    "backup_objects",
    "object_versions",
    "tags",
    "object_retention",
    "job_failures",
)


class CannotIssue(Exception):
    """The catalog user may not create roles: per-job logins cannot be had."""


class Credential(NamedTuple):
    role: str
    password: str

    def url(self, catalog_url: str) -> str:
        """The catalog's URL, logged in as this role instead."""
        login = make_url(catalog_url).set(username=self.role, password=self.password)
        return login.render_as_string(hide_password=False)


def issue(session: Session, job_id: int, *, valid_for: timedelta) -> Credential:
    """A new role for job `job_id`, its earlier ones revoked (a try that was cut short)."""
    with _outages_said():
        return _issue(session, job_id, valid_for)


def _issue(session: Session, job_id: int, valid_for: timedelta) -> Credential:
    revoke(session, job_id)
    job = get_job(session, job_id)
    role, password = f"backup_job_{job_id}_{secrets.token_hex(4)}", secrets.token_urlsafe(32)
    connection = _psycopg(session)
    # Only the SCRAM verifier is sent: the password appears in no statement or log.
    verifier = connection.pgconn.encrypt_password(
        password.encode(), role.encode(), b"scram-sha-256"
    )
    until = (datetime.now(UTC) + valid_for).isoformat()
    tables = {
        "SELECT": READS + READS_AND_UPDATES + WRITES,
        "UPDATE": READS_AND_UPDATES + WRITES,
        "INSERT, DELETE": WRITES,
    }
    with connection.cursor() as cursor:
        try:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}").format(
                    sql.Identifier(role), sql.Literal(verifier.decode()), sql.Literal(until)
                )
            )
        except psycopg.errors.InsufficientPrivilege as error:
            session.rollback()
            raise CannotIssue(
                f"the catalog user may not create roles ({error.diag.message_primary}): "
                "grant it CREATEROLE, or set AGENT_CATALOG_ACCESS=shared"
            ) from None
        for privileges, names in tables.items():
            cursor.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(privileges),
                    sql.SQL(", ").join(sql.Identifier(name) for name in names),
                    sql.Identifier(role),
                )
            )
        cursor.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    session.add(JobCredential(role_name=role, job_id=job.id, bucket_id=job.bucket_id))
    session.flush()
    return Credential(role, password)


def revoke(session: Session, job_id: int) -> list[str]:
    """Drop every role of job `job_id`, ending its sessions: a leaked one is useless."""
    with _outages_said():
        return _revoke(session, job_id)


def _revoke(session: Session, job_id: int) -> list[str]:
    roles = list(
        session.scalars(select(JobCredential.role_name).where(JobCredential.job_id == job_id))
    )
    if not roles:
        return []
    connection = _psycopg(session)
    with connection.cursor() as cursor:
        for role in roles:
            cursor.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            try:
                with connection.transaction():  # a savepoint
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                        [role],
                    )
            except psycopg.errors.InsufficientPrivilege:
                # (PostgreSQL 16+ gives a role's creator no right to signal it): its
                # sessions end with its pod; NOLOGIN and DROP ROLE refuse new ones.
                pass
            cursor.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    session.execute(delete(JobCredential).where(JobCredential.job_id == job_id))
    session.flush()
    return roles


def _psycopg(session: Session) -> psycopg.Connection[object]:
    """The session's own connection (and transaction), for statements that take no
    parameters (CREATE ROLE, GRANT): composed with psycopg's quoting instead."""
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


@contextlib.contextmanager
def _outages_said() -> Iterator[None]:
    """psycopg's own errors (these statements bypass SQLAlchemy): an outage is said as one."""
    try:
        yield
    except psycopg.OperationalError as error:
        raise Unavailable("the database", str(error).splitlines()[0]) from None

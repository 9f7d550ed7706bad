"""`backup-operator`: serve the API, migrate, develop; back up, show, restore, verify."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from .settings import Settings, SettingsError, get_settings

logger = logging.getLogger("backup_operator")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from .api.app import create_app

    if not settings.auth_enabled:
        logger.warning(
            "no API_TOKENS or API_READ_ONLY_TOKENS configured: the API is open, so it "
            "listens on %s only",
            settings.bind_host,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


def migrate(settings: Settings) -> None:
    from .migrate import upgrade

    upgrade(settings.database_url())
    logger.info("catalog schema is up to date")


@contextlib.contextmanager
def embedded_services(settings: Settings) -> Iterator[Settings]:
    """Start what is not configured: PostgreSQL and/or S3, data kept in DEV_DATA_DIR."""
    from .embedded import EmbeddedPostgres, EmbeddedS3, free_port

    data = Path(settings.dev_data_dir).resolve()
    started: list[EmbeddedPostgres | EmbeddedS3] = []
    overrides: dict[str, object] = {}
    try:
        if "SQLALCHEMY_DATABASE_URL" not in os.environ:
            pg = EmbeddedPostgres(data / "postgres").start()
            started.append(pg)
            _ensure_database(pg.url(), "backups")
            overrides["sqlalchemy_database_url"] = SecretStr(pg.url("backups"))
            logger.info("embedded PostgreSQL on 127.0.0.1:%s, data in %s", pg.port, pg.data_dir)
        if "MINIO_ENDPOINT" not in os.environ:
            port = settings.dev_s3_port if _port_free(settings.dev_s3_port) else free_port()
            s3 = EmbeddedS3(
                data / "s3",
                port=port,
                access_key=settings.minio_access_key.get_secret_value(),
                secret_key=settings.minio_secret_key.get_secret_value(),
            ).start()
            started.append(s3)
            overrides["minio_endpoint"] = s3.endpoint
            overrides["minio_secure"] = False
            logger.info("embedded S3 (SeaweedFS) on %s, data in %s", s3.endpoint, s3.data_dir)
        ready = settings.model_copy(update=overrides)
        env_file = _write_console_env(ready, data)
        logger.info(
            "console commands in another terminal: . %s && .venv/bin/backup-operator --help",
            env_file,
        )
        yield ready
    finally:
        for server in reversed(started):
            server.stop()
        (data / "env").unlink(missing_ok=True)


def _write_console_env(settings: Settings, data: Path) -> Path:
    """The exports that point the console at what `make dev` serves, readable only by
    this user (they hold the embedded servers' credentials)."""
    import shlex

    values = {
        "SQLALCHEMY_DATABASE_URL": settings.database_url(),
        "MINIO_ENDPOINT": settings.minio_endpoint,
        "MINIO_ACCESS_KEY": settings.minio_access_key.get_secret_value(),
        "MINIO_SECRET_KEY": settings.minio_secret_key.get_secret_value(),
        "MINIO_SECURE": "true" if settings.minio_secure else "false",
    }
    path = data / "env"
    data.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    return path


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _ensure_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def dev(settings: Settings) -> None:
    if not settings.source_roots:
        # A developer's own machine: the API may back up any directory of it (restores
        # through the API still need RESTORE_ROOTS).
        settings = settings.model_copy(update={"source_roots": [Path("/")]})
    with embedded_services(settings) as ready:
        migrate(ready)
        serve(ready)


SERVICES = {"serve": serve, "migrate": migrate, "dev": dev}


def parser() -> argparse.ArgumentParser:
    from .console import add_commands

    top = argparse.ArgumentParser(prog="backup-operator", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API (and its scheduler)")
    commands.add_parser("migrate", help="apply the catalog's migrations")
    commands.add_parser("dev", help="serve on embedded PostgreSQL and S3 (make dev)")
    operator = commands.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; default: WATCH_NAMESPACES, else all)",
    )
    operator.add_argument("-A", "--all-namespaces", action="store_true", help="watch all")
    operator.add_argument("--standalone", action="store_true", help="no peering with replicas")
    operator.add_argument("--peering", help="Kopf peering name (default: OPERATOR_PEERING)")
    operator.add_argument("--liveness", help="liveness endpoint: http://0.0.0.0:8080/healthz")
    add_commands(commands)
    return top


def _exit_on_sigterm() -> None:
    # uvicorn re-raises the signal it caught after its own shutdown; as an exception it
    # lets `finally` stop the embedded servers instead of killing the process outright.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .errors import DomainError, Unavailable
    from .retry import RetriesExhausted, outage

    args = parser().parse_args(argv)
    _exit_on_sigterm()
    try:
        settings = get_settings()
        configure_logging(settings.log_level)
        if args.command != "dev":
            settings.database_url()  # fail now, naming the variable, not at first use
        if args.command == "operator":
            from .operator.main import run as run_operator

            run_operator(settings, args)
            return 0
        if args.command in SERVICES:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops them
                SERVICES[args.command](settings)
            return 0
        from .console import run

        return run(settings, args)
    except SettingsError as error:
        print(f"backup-operator: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except DomainError as error:
        where = f" ({error.field})" if error.field else ""
        print(f"backup-operator: {error.message}{where}", file=sys.stderr)
        return EXIT_CONFIG if error.code == "invalid" else 1
    except (Unavailable, RetriesExhausted) as error:
        print(f"backup-operator: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except SQLAlchemyError as error:
        why = outage(error)
        if why is None:
            raise
        print(f"backup-operator: {why} ({_first_line(error)})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


if __name__ == "__main__":
    sys.exit(main())

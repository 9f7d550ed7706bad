"""`backup-operator`: serve the API, migrate, develop, run the operator; back up, show,
restore, verify. One command line (Click); what it exits with is exit_codes.Exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .exit_codes import Exit
from .settings import Settings, SettingsError, get_settings

logger = logging.getLogger("backup_operator")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )


def _settings(*, needs_database: bool = True) -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level)
    if needs_database:
        settings.database_url()  # fail now, naming the variable, not at first use
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Keeps the metadata of backups stored in MinIO: the API, the Kubernetes operator
    and the console commands, all reading the same settings."""


# --- services ---------------------------------------------------------------------------


def _serve(settings: Settings) -> None:
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


def _migrate(settings: Settings) -> None:
    from .migrate import upgrade

    upgrade(settings.database_url())
    logger.info("catalog schema is up to date")


@cli.command()
def serve() -> None:
    """Serve the API (and its scheduler)."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        _serve(_settings())


@cli.command()
def migrate() -> None:
    """Apply the catalog's migrations."""
    _migrate(_settings())


@cli.command()
def dev() -> None:
    """Serve on embedded PostgreSQL and S3 (make dev)."""
    from . import embedded  # the `embedded` extra: development only

    settings = _settings(needs_database=False)
    if not settings.source_roots:
        # A developer's own machine: the API may back up any directory of it (restores
        # through the API still need RESTORE_ROOTS).
        settings = settings.model_copy(update={"source_roots": [Path("/")]})
    with contextlib.suppress(KeyboardInterrupt), embedded.services(settings) as ready:
        _migrate(ready)
        _serve(ready)


@cli.command("operator")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="watch this namespace (repeatable; default: WATCH_NAMESPACES, else all)",
)
@click.option("-A", "--all-namespaces", is_flag=True, help="watch all")
@click.option("--standalone", is_flag=True, help="no peering with replicas")
@click.option("--peering", help="Kopf peering name (default: OPERATOR_PEERING)")
@click.option("--liveness", help="liveness endpoint: http://0.0.0.0:8080/healthz")
def operator_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering: str | None,
    liveness: str | None,
) -> None:
    """Run the Kubernetes operator."""
    from .operator.main import run

    settings = _settings()
    watched = [] if all_namespaces else (list(namespaces) or settings.watch_namespaces)
    run(settings, namespaces=watched, standalone=standalone, peering=peering, liveness=liveness)


# --- console commands -------------------------------------------------------------------


def _console(command: Callable[..., Exit], *args: Any, **kwargs: Any) -> Exit:
    from . import console

    try:
        with console.context(_settings()) as ctx:
            return command(ctx, *args, **kwargs)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK


@cli.command()
@click.argument("source", required=False)
@click.option("--bucket", help="bucket name (created, versioned, if missing)")
@click.option("--prefix", default="", help="key prefix in the bucket")
@click.option("--name", help="job name (default: the source)")
@click.option("--rehash", is_flag=True, help="hash files whose stat is unchanged")
@click.option("--job", type=int, help="run this existing job instead (resumes it)")
@click.option(
    "--pack-threshold",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="pack files smaller than this (0: every file its own object; "
    "default PACK_THRESHOLD_BYTES)",
)
@click.option("--source", "mounted_at", help="with --job: where its source is mounted here")
@click.option(
    "--batch-files",
    type=click.IntRange(min=1),
    help="files recorded per transaction (default: the engine's, 1000)",
)
def backup(**options: Any) -> Exit:
    """Back a directory up now (or run an existing job), print its statistics as JSON."""
    from .console import BackupRequest, backup

    given = {name: value for name, value in options.items() if value is not None}
    return _console(backup, BackupRequest(**given))


@cli.command()
@click.argument("job", type=int)
def show(job: int) -> Exit:
    """Show a job as JSON."""
    from .console import show

    return _console(show, job)


@cli.command()
@click.argument("job", type=int)
@click.argument("target")
@click.option("--path", help="only this file")
@click.option("--prefix", help="only files under this path prefix")
@click.option("--overwrite", is_flag=True, help="replace existing files")
def restore(job: int, target: str, path: str | None, prefix: str | None, overwrite: bool) -> Exit:
    """Restore a completed job, one file, or a prefix into TARGET."""
    from .console import restore_job

    if path is not None and prefix is not None:
        raise click.UsageError("give --path or --prefix, not both")
    return _console(restore_job, job, target, path=path, prefix=prefix, overwrite=overwrite)


@cli.command()
@click.argument("bucket")
@click.option("--sample", type=click.IntRange(min=0), default=0, help="check N random checksums")
@click.option("--all", "check_all", is_flag=True, help="check every checksum")
@click.option("--repair", is_flag=True, help="mark versions missing from the store as deleted")
@click.option(
    "--delete-untracked",
    is_flag=True,
    help="with --repair: delete store versions the catalog does not know",
)
def verify(bucket: str, sample: int, check_all: bool, repair: bool, delete_untracked: bool) -> Exit:
    """Compare the catalog with a bucket."""
    from .console import verify_bucket

    if sample and check_all:
        raise click.UsageError("give --sample or --all, not both")
    return _console(
        verify_bucket,
        bucket,
        sample=sample,
        all=check_all,
        repair=repair,
        delete_untracked=delete_untracked,
    )


# --- the process ------------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    # uvicorn re-raises the signal it caught after its own shutdown; as an exception it
    # lets `finally` stop the embedded servers instead of killing the process outright.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


@contextlib.contextmanager
def _exit_codes() -> Iterator[list[int]]:
    """Errors as one line on stderr and the exit code of their kind, never a traceback
    (a bug's excepted)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .errors import DomainError, Unavailable
    from .retry import RetriesExhausted, outage

    code = [int(Exit.OK)]
    try:
        yield code
    except click.ClickException as error:
        error.show()
        code[0] = error.exit_code
    except click.exceptions.Exit as done:  # --help
        code[0] = done.exit_code
    except SettingsError as error:
        _say(str(error))
        code[0] = Exit.USAGE
    except DomainError as error:
        _say(f"{error.message} ({error.field})" if error.field else error.message)
        code[0] = Exit.USAGE if error.code == "invalid" else Exit.FAILED
    except (Unavailable, RetriesExhausted) as error:
        _say(str(error))
        code[0] = Exit.UNAVAILABLE
    except SQLAlchemyError as error:
        why = outage(error)
        if why is None:
            raise
        _say(f"{why} ({_first_line(error)})")
        code[0] = Exit.UNAVAILABLE
    except (KeyboardInterrupt, click.exceptions.Abort):
        code[0] = Exit.INTERRUPTED


def _say(message: str) -> None:
    print(f"backup-operator: {message}", file=sys.stderr)


def _first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def main(argv: list[str] | None = None) -> int:
    _exit_on_sigterm()
    with _exit_codes() as code:
        result = cli.main(args=argv, prog_name="backup-operator", standalone_mode=False)
        code[0] = int(result or 0)
    return code[0]


if __name__ == "__main__":
    sys.exit(main())

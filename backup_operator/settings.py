"""The one settings object, read from the environment.

Variable names are those of the original docker-compose design, so its users
can move over unchanged (`MINIO_*`, `SQLALCHEMY_DATABASE_URL`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK = "127.0.0.1"


def _split_tokens(value: object) -> object:
    if isinstance(value, str):
        return [token.strip() for token in value.split(",") if token.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    minio_endpoint: str = Field("localhost:9000", description="host:port of the S3 server")
    minio_access_key: SecretStr = SecretStr("minioadmin")
    minio_secret_key: SecretStr = SecretStr("minioadmin")
    minio_secure: bool = False
    minio_region: str | None = None
    # The store as a browser reaches it (host:port), when that is not MINIO_ENDPOINT (an
    # in-cluster address): the web interface's presigned download links name it.
    minio_public_endpoint: str | None = None
    # How long one request waits for an answer (tried 4 times) before the store counts
    # as unavailable: bounds what a hung server holds up (uploads of big parts included).
    minio_read_timeout_seconds: float = Field(120.0, gt=0)

    sqlalchemy_database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; `make dev` starts an embedded server when unset"
    )
    db_pool_size: int = Field(10, ge=1, le=200)

    # Read-write and read-only bearer tokens, comma separated. None: local development.
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_read_only_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = Field(2.0, gt=0)
    job_heartbeat_timeout_seconds: float = Field(60.0, gt=0)
    # A job whose worker keeps dying is failed (WorkerLost) after this many attempts.
    job_max_attempts: int = Field(3, ge=1, le=100)
    # A deletion held by the operator's finalizer (deleteObjectsOnDelete) gives up after
    # this long, reporting what blocked it; what was not deleted stays in the bucket.
    deletion_deadline_seconds: float = Field(600.0, gt=0)
    # A retention run stops after this long, reporting what blocked it; the next run
    # carries on from what is left.
    retention_run_deadline_seconds: float = Field(3600.0, gt=0)

    # Called with a JSON document when a backup job ends (retried; never holds the job).
    webhook_url: SecretStr | None = None

    # Label sets per metric before the least active are folded into "other".
    metrics_max_series: int = Field(500, ge=1, le=100_000)
    # Seconds a scrape may be answered from the last one's catalog figures.
    metrics_max_age_seconds: float = Field(15.0, ge=0, le=3600)
    # The operator's /metrics port (0: none).
    metrics_port: int = Field(9090, ge=0, le=65535)

    # API requests using the object store at once (of the 40 worker threads); beyond, 503.
    store_concurrency: int = Field(16, ge=1, le=40)

    # Files smaller than this are stored in pack objects of about PACK_SIZE_BYTES, many
    # to an S3 object (one PUT for hundreds of small files); 0: every file its own object.
    # A job's `pack_threshold` overrides it.
    pack_threshold_bytes: int = Field(1024 * 1024, ge=0, le=64 * 1024 * 1024)
    pack_size_bytes: int = Field(8 * 1024 * 1024, ge=1024 * 1024, le=256 * 1024 * 1024)
    # File contents a backup holds in memory at once (its batch, packs and upload parts):
    # a smaller budget runs fewer large uploads at once.
    backup_memory_mib: int = Field(256, ge=64, le=65536)
    # A jobs policy's run rewrites the packs whose content bytes are at least this share
    # unreferenced by kept files (1: never; a pack referenced by none is always deleted).
    pack_prune_waste: float = Field(0.5, gt=0, le=1)

    # Seconds a client is told to wait after a 503 (a dependency is down).
    retry_after_seconds: int = Field(5, ge=1)

    # The only directories (comma separated, absolute) that the API's and the operator's
    # backups may read and the API's restores may write; none: such requests are refused.
    source_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    restore_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    # The operator (`backup-operator operator`). Namespaces: comma separated; empty, the
    # whole cluster.
    watch_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    operator_poll_seconds: float = Field(1.0, gt=0, description="how often jobs are polled")
    operator_peering: str = Field("minio-backup-operator", description="Kopf peering name")
    # Replicas need distinct priorities (Kopf pauses all of equal ones): random if unset.
    operator_priority: int | None = Field(None, ge=0)
    # The batch Jobs that back up PVCs: their image, and the Secrets their pods read the
    # catalog URL (key SQLALCHEMY_DATABASE_URL) and the default store credentials
    # (keys MINIO_ACCESS_KEY, MINIO_SECRET_KEY) from.
    agent_image: str = "minio-backup-operator:0.1.0"
    # "per-job": each pod gets a catalog login of its own job's (a role confined to its
    # bucket, dropped when the job ends; needs a catalog user with CREATEROLE); "shared":
    # pods read the catalog URL from AGENT_DATABASE_SECRET in their namespace.
    agent_catalog_access: Literal["per-job", "shared"] = "per-job"
    agent_database_secret: str = "minio-backup-operator-database"
    agent_database_secret_key: str = "SQLALCHEMY_DATABASE_URL"
    agent_store_secret: str = "minio-backup-operator-store"
    agent_service_account: str | None = None
    agent_backoff_limit: int = Field(2, ge=0, le=20)
    # Their resources (JSON), unless a BackupJob sets `spec.resources`; half the memory
    # limit is their BACKUP_MEMORY_MIB.
    agent_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        }
    )

    # `make dev` only: where the embedded servers keep their data, and the S3 port.
    dev_data_dir: str = ".dev-data"
    dev_s3_port: int = Field(9000, ge=1, le=65535)

    _split_api_tokens = field_validator(
        "api_tokens",
        "api_read_only_tokens",
        "watch_namespaces",
        "source_roots",
        "restore_roots",
        mode="before",
    )(_split_tokens)

    @field_validator("source_roots", "restore_roots")
    @classmethod
    def _roots_are_absolute(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"{root} is not an absolute path")
        return roots

    @field_validator("minio_endpoint", "minio_public_endpoint")
    @classmethod
    def _endpoint_is_host_port(cls, value: str | None) -> str | None:
        if value is not None and ("://" in value or "/" in value):
            raise ValueError(
                "must be host:port without a scheme or path (use MINIO_SECURE for TLS)"
            )
        return value

    @field_validator("sqlalchemy_database_url")
    @classmethod
    def _url_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value()
        scheme = url.split("://", 1)[0]
        if scheme in ("postgresql", "postgres"):
            return SecretStr("postgresql+psycopg://" + url.split("://", 1)[1])
        if scheme != "postgresql+psycopg":
            raise ValueError("must be a PostgreSQL URL (postgresql://user:pass@host:port/db)")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens or self.api_read_only_tokens)

    @property
    def bind_host(self) -> str:
        # Without tokens the API is open: never expose it beyond this machine.
        return self.api_host if self.auth_enabled else LOOPBACK

    def webhook(self) -> str | None:
        return self.webhook_url.get_secret_value() if self.webhook_url else None

    def database_url(self) -> str:
        if self.sqlalchemy_database_url is None:
            raise SettingsError("SQLALCHEMY_DATABASE_URL is not set")
        return self.sqlalchemy_database_url.get_secret_value()


class SettingsError(Exception):
    """Settings that cannot be used; the message names the variable."""


def describe_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        variable = "_".join(str(part) for part in item["loc"][:1]).upper()
        lines.append(f"invalid setting {variable}: {item['msg']}")
    return "\n".join(lines)


@functools.cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None

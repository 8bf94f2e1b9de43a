"""One settings class for the whole product (environment prefix ``FLEET_``).

``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are also read without the prefix because
they are the names operators and platforms (Helm, CI) conventionally set.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "change-me-in-production"


class Settings(BaseSettings):
    """Runtime configuration. Every field is documented in ``docs/configuration.md``."""

    model_config = SettingsConfigDict(env_prefix="FLEET_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    secret_key: str = PLACEHOLDER_SECRET

    data_dir: Path = Path("var")
    database_url: str = Field(
        default="",
        validation_alias=AliasChoices("FLEET_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL; empty means a SQLite file under data_dir.",
    )

    kafka_bootstrap_servers: str = Field(
        default="",
        validation_alias=AliasChoices("FLEET_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Existing cluster; empty means the local broker started by `fleet kafka up`.",
    )
    kafka_local_port: int = 9092
    kafka_local_controller_port: int = 9093
    kafka_version: str = "4.1.1"
    kafka_cache_dir: Path = Path.home() / ".cache" / "fleet-backend" / "kafka"
    kafka_heap: str = "768m"
    topic_partitions: int = 6

    telemetry_topic: str = "telemetry.v1"
    telemetry_dlq_topic: str = "telemetry.dlq"
    findings_topic: str = "diagnostics.findings.v1"
    predictions_topic: str = "maintenance.predictions.v1"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    produce_timeout_s: float = 5.0
    credential_cache_ttl_s: float = 10.0
    console_session_hours: float = Field(default=8.0, gt=0)
    console_idle_minutes: float = Field(default=30.0, gt=0)
    console_cookie_secure: bool = False
    signals_lookback_days: int = Field(default=90, ge=1, le=36_600)

    ingest_max_body_bytes: int = 1_048_576
    ingest_max_decompressed_bytes: int = 8_388_608
    ingest_max_samples: int = 1000
    ingest_max_signals_per_sample: int = 256
    ingest_max_future_skew_s: int = 300
    ingest_max_age_s: int = 30 * 24 * 3600

    archive_url: str = Field(default="", description="Directory or pyarrow filesystem URL.")
    archive_roll_bytes: int = 64 * 1024 * 1024
    archive_roll_seconds: float = 30.0
    diagnostics_rules_path: Path | None = None
    """Rules file of the diagnosis worker (``docs/rules.md``); None: the shipped defaults."""
    diagnostics_late_after_s: float = 300.0
    diagnostics_checkpoint_s: float = 10.0
    pdm_registry_dir: Path | None = None
    """Model registry of predictive maintenance; None: ``data_dir/models``."""
    pdm_score_interval_s: float = 10.0
    pdm_model_check_s: float = 30.0
    archive_native_decoder: bool = True
    """Decode records with the native extension (``ingestion._columnar``) when it is built."""
    services_dlq_topic: str = "services.dlq"
    """Dead letters of the services worker (findings or predictions it cannot read)."""
    services_max_distance_km: float = 150.0
    """Centers farther than this from the vehicle's last position are not proposed."""
    services_min_notice_h: float = 2.0
    """The earliest slot offered starts at least this long from now."""
    services_search_days: int = 60
    """How far ahead a slot is searched when none is free before the due date."""
    services_retry_s: float = 300.0
    """How often unassigned bookings are retried and routine schedules checked."""
    services_routine_km: float = 15_000.0
    services_routine_days: int = 365
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 12
    webhook_backoff_base_s: float = 5.0
    webhook_backoff_max_s: float = 3600.0
    webhook_poll_s: float = 1.0
    webhook_lease_s: float = 60.0
    webhook_concurrency: int = 16
    webhook_rotation_overlap_h: float = 24.0
    """After a secret rotation, deliveries are signed with the old secret too for this long."""

    ota_store_url: str = ""
    """Object store of software images: a directory or a pyarrow filesystem URL (``s3://...``);
    empty means ``data_dir/ota/images``."""
    ota_keys_dir: Path | None = None
    """Online signing keys of the Image repository and the Director; None: ``data_dir/ota/keys``."""
    ota_max_image_bytes: int = 2 * 1024**3
    ota_reports_topic: str = "ota.reports.v1"
    ota_dlq_topic: str = "ota.dlq"
    ota_refresh_s: float = 600.0
    """How often the ``ota`` worker re-signs metadata that expires soon."""

    ubi_checkpoint_s: float = 10.0
    """How often the ``ubi`` and ``battery`` workers store results, state and commit offsets."""
    ubi_period_days: int = 30
    """The trailing period of the current UBI score."""
    ubi_time_zone_default: str = "UTC"
    """Time zone of vehicles missing from the registry (night driving is local time)."""
    battery_default_kwh: float | None = None
    """Rated pack energy for battery vehicles whose model is not in ``ubi.battery_specs``;
    None: such vehicles get no battery health."""
    partner_signing_key_path: Path | None = None
    """Ed25519 private key (PEM) that signs partner API responses; None:
    ``data_dir/keys/partner-signing.pem``, generated on first use."""
    retention_location_days: int = 90
    """Raw location data (positions in the archive and the status table) older than this is
    purged by ``fleet privacy purge`` / the privacy job."""
    erasure_deadline_h: float = 24.0
    """An erasure request is carried out within this many hours (``due_at``)."""
    privacy_interval_s: float = 60.0
    """How often ``fleet privacy run`` (started by ``fleet run``) looks for due work."""

    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line with the correlation id (the Helm chart sets it)."""
    log_level: str = "INFO"
    metrics_enabled: bool = True
    """Serve ``GET /metrics`` on the API port (unauthenticated; see ``docs/observability.md``)."""
    metrics_host: str = "127.0.0.1"
    """Bind address of a worker's metrics and probe server (``0.0.0.0`` in a container)."""
    metrics_port: int = 9108
    """Port of a worker's ``/metrics``, ``/healthz`` and ``/readyz``; 0 disables the server.
    ``fleet run`` gives each child its own port."""
    worker_liveness_s: float = 120.0
    """A worker whose poll loop has not run for this long fails ``/healthz``."""

    consumer_max_records: int = 2000
    consumer_poll_timeout_ms: int = 500
    dlq_max_invalid_ratio: float = 0.5
    dlq_min_messages: int = 200

    vss_catalog_path: Path | None = Field(
        default=None, description="Optional full VSS JSON export to validate any VSS signal."
    )

    @model_validator(mode="after")
    def _webhook_lease_outlives_an_attempt(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                "FLEET_WEBHOOK_LEASE_S must be longer than FLEET_WEBHOOK_TIMEOUT_S, or another "
                "dispatcher takes over deliveries still in flight"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment == "production" and self.secret_key == PLACEHOLDER_SECRET:
            raise ValueError("FLEET_SECRET_KEY must be set to a real secret in production")
        return self

    @property
    def ota_store_location(self) -> str:
        return self.ota_store_url or str(self.data_dir / "ota" / "images")

    @property
    def ota_keys_location(self) -> Path:
        return self.ota_keys_dir or self.data_dir / "ota" / "keys"

    @property
    def partner_signing_key_location(self) -> Path:
        return self.partner_signing_key_path or self.data_dir / "keys" / "partner-signing.pem"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common postgres:// and postgresql:// forms; we ship psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'fleet.db').as_posix()}"

    @property
    def archive_location(self) -> str:
        return self.archive_url or str(self.data_dir / "archive")

    @property
    def kafka_is_local(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_local_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

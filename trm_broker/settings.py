"""All configuration, from environment variables prefixed ``TRM_`` (see README, Configuration)."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/trm-broker.db"
DEFAULT_NODE_DATABASE_URL = "sqlite+aiosqlite:///./var/trm-node.db"


class Settings(BaseSettings):
    """One settings class for the broker, its dispatcher and the reference node."""

    model_config = SettingsConfigDict(env_prefix="TRM_", extra="ignore")

    # --- broker -------------------------------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL; SQLite file by default, postgresql+asyncpg://… "
        "for production.",
    )
    host: str = Field("127.0.0.1", description="Address `trm-broker serve` listens on.")
    port: int = Field(8400, description="Port `trm-broker serve` listens on.")
    broker_key_file: Path = Field(
        Path("./var/broker-key.json"),
        description="The broker's own Ed25519 signing key (receipts); created on first start.",
    )
    broker_key: SecretStr | None = Field(
        None,
        description="The broker's key document (the JSON of a key file) from the environment, "
        "instead of TRM_BROKER_KEY_FILE; never logged.",
    )
    public_url: str | None = Field(
        None,
        description="The broker's base URL as callers address it (their signatures cover "
        "it); unset: the URL each request arrived on. Set it behind a reverse proxy.",
    )
    operator_key_file: Path = Field(
        Path("./var/operator-key.json"),
        description="The operator's key set: created by `trm-broker operator init`, used by "
        "`trm-broker participants …` to sign registry changes.",
    )
    broker_url: str = Field(
        "http://127.0.0.1:8400",
        description="Base URL of the broker that `trm-broker participants …` calls.",
    )
    max_envelope_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest accepted envelope, and request body of the broker and the node, "
        "in bytes (413 above, before any parsing).",
    )
    max_json_depth: int = Field(
        32,
        ge=4,
        le=256,
        description="Deepest nesting of arrays and objects a JSON body may have (400 above, "
        "checked before parsing).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long a client has to send a request's headers (408 and the "
        "connection closed after).",
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a client has to send a request's body (408 after)."
    )
    rate_per_second: float = Field(
        50.0,
        ge=0,
        description="Signed requests each participant may make per second, on average, per "
        "broker process (429 with Retry-After above); 0: no limit.",
    )
    rate_burst: int = Field(
        500, ge=1, description="Signed requests a participant may make at once above the rate."
    )
    address_rate_per_second: float = Field(
        100.0,
        ge=0,
        description="Unsigned requests, and requests whose signature is refused, one client "
        "address may make per second per broker process (429 above); 0: no limit.",
    )
    address_rate_burst: int = Field(
        1000, ge=1, description="Such requests one address may make at once above the rate."
    )
    clock_skew_seconds: int = Field(
        300,
        description="How far an envelope's created_at, or a signed request's created time, "
        "may be from the receiver's clock.",
    )
    delivery_timeout_seconds: float = Field(
        10.0, description="Timeout of one push to a recipient's inbox."
    )
    delivery_poll_seconds: float = Field(
        1.0, description="How often the dispatcher looks for due deliveries when idle."
    )
    delivery_backoff_max_seconds: float = Field(
        300.0, description="Upper bound of the wait between two delivery attempts."
    )
    delivery_max_age_seconds: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long a delivery is retried after it was queued; then it is "
        "dead-lettered, with an alert and a ledger entry, until an operator re-queues it.",
    )
    delivery_concurrency: int = Field(
        16, ge=1, le=256, description="Pushes one dispatcher has in flight at once."
    )
    run_dispatcher: bool = Field(
        True,
        description="Run the delivery dispatcher inside `trm-broker serve`. Set false where "
        "separate `trm-broker worker` processes run it (PostgreSQL only).",
    )
    worker_port: int = Field(
        8401, description="Port of `trm-broker worker`'s health endpoint (on TRM_HOST)."
    )
    inbox_max_wait_seconds: float = Field(
        30.0,
        ge=0,
        le=300,
        description="Longest wait of a long-poll on the pull inbox (GET /v1/inbox).",
    )
    allow_loopback_inboxes: bool = Field(
        False,
        description="Let inbox URLs point at loopback (http allowed there): development only.",
    )
    allow_private_inboxes: bool = Field(
        False, description="Let inbox URLs resolve to private or reserved (non-global) addresses."
    )
    ledger_origin: str = Field(
        "trm-broker.example/ledger",
        pattern=r"^[^\s+]+$",
        description="The ledger's origin line and signed-note key name (C2SP); set it to a "
        "name of your own, e.g. trm.<ministry domain>/ledger, before the first start.",
    )
    retention_seconds: int = Field(
        30 * 24 * 3600,
        ge=0,
        description="How long an acknowledged message's sealed payload stays at the broker.",
    )
    risk_max_age: timedelta = Field(
        timedelta(days=30),
        description="How recent the risk assessment recommending return must be when a "
        "return is prepared (seconds, or ISO 8601 like P30D).",
    )
    min_notice: timedelta = Field(
        timedelta(hours=72),
        description="How far ahead of the planned arrival a return must be prepared, so the "
        "receiving organisation can prepare.",
    )
    reception_grace: timedelta = Field(
        timedelta(hours=48),
        description="After the planned arrival, how long until a missing reception "
        "confirmation raises an alert.",
    )
    monitoring_period: timedelta = Field(
        timedelta(days=365),
        le=timedelta(days=3 * 365),
        description="How long after reception monitoring reports are accepted (up to 3 years).",
    )
    monitoring_interval: timedelta = Field(
        timedelta(days=91),
        description="How long without a monitoring report before an overdue alert.",
    )
    alert_check_seconds: float = Field(
        60.0, description="How often the scheduler looks for overdue receptions and reports."
    )
    report_max_days: int = Field(
        732,
        ge=1,
        description="Longest period (`to` - `from`) one auditors' report may cover, in days.",
    )
    report_min_cell: int = Field(
        11,
        ge=1,
        description="Counts smaller than this are suppressed in auditors' reports "
        "(k-anonymity; 11 as in the CTDC dataset).",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    otel_enabled: bool = Field(
        False,
        description="Export OpenTelemetry traces of HTTP requests (method, route template, "
        "status only); needs the `otel` extra, or the broker refuses to start.",
    )
    otel_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; unset: the "
        "standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.",
    )

    # --- reference NRM node -------------------------------------------------------------
    node_database_url: str = Field(
        DEFAULT_NODE_DATABASE_URL, description="The node's own database (SQLite by default)."
    )
    node_host: str = Field("127.0.0.1", description="Address `trm-broker node serve` listens on.")
    node_port: int = Field(8500, description="Port `trm-broker node serve` listens on.")
    node_broker_url: str = Field(
        "http://127.0.0.1:8400", description="Base URL of the broker the node talks to."
    )
    node_public_url: str | None = Field(
        None,
        description="The node's base URL as the broker addresses it (the inbox URL without "
        "its path); unset: the URL each request arrived on.",
    )
    node_key_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated key files (from `trm-broker keys new`) of the "
        "participants this node serves.",
    )
    node_keys: SecretStr | None = Field(
        None,
        description="The node's key sets from the environment instead of files: a JSON array "
        "of key files' contents (from `trm-broker keys new`), read after TRM_NODE_KEY_FILES; "
        "never logged.",
    )
    node_api_token: SecretStr | None = Field(
        None,
        description="Bearer token for the node's local case-worker API. Unset: refused.",
    )

    node_pull: bool = Field(
        False,
        description="Fetch messages from the broker's pull inbox (GET /v1/inbox) instead of "
        "waiting for pushes: for a node the broker cannot reach.",
    )
    node_pull_wait_seconds: float = Field(
        20.0, ge=0, le=300, description="How long each of the node's long-polls waits."
    )

    @field_validator("node_key_files", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()) for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""All configuration, from environment variables prefixed ``TRM_``.

docs/configuration.md lists every setting with its type, default, allowed values and meaning;
it is generated from this class (`trm-broker docs write`) and a test fails when it drifts.

Conventions:

- **Durations** are numbers of seconds, in variables whose names end in ``_SECONDS``
  (``TRM_CLOCK_SKEW_SECONDS=300``); an ISO 8601 duration (``PT5M``, ``P30D``) is accepted
  too. The one exception is ``TRM_REPORT_MAX_DAYS``, a count of whole days, because an
  auditors' report covers whole days. Five settings were durations without a unit before and
  keep their old names as aliases: ``TRM_RISK_MAX_AGE``, ``TRM_MIN_NOTICE``,
  ``TRM_RECEPTION_GRACE``, ``TRM_MONITORING_PERIOD`` and ``TRM_MONITORING_INTERVAL`` (each
  now ``…_SECONDS``; the new name wins when both are set).
- **Every setting is bounded**: a value outside its range stops the process at start with one
  line per bad setting (:mod:`trm_broker.settings_explained`). Where 0 is allowed it means
  "off" or "none", as the description says.
- Secrets are ``SecretStr`` and never printed, not even when refused.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/trm-broker.db"
DEFAULT_NODE_DATABASE_URL = "sqlite+aiosqlite:///./var/trm-node.db"

DAY = 24 * 3600
_DATABASE_URL = r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://\S*$"
_HTTP_URL = r"^https?://\S+$"
_DATABASE_URLS = "a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
_HTTP_URLS = "an http:// or https:// URL"
_CLAIM = r"^[A-Za-z0-9_.:/-]{1,128}$"
_CLAIMS = "a claim name: letters, digits and _ . : / -"
_DURATION = TypeAdapter(timedelta)
#: Pinned Ed25519 keys: up to 16 comma-separated ``<kid>=<public key>``, each base64url of
#: 43 characters (an RFC 7638 thumbprint, a 32-byte key). The node checks at start that each
#: kid is its key's thumbprint.
_PINNED_KEY = r"[A-Za-z0-9_-]{43}=[A-Za-z0-9_-]{43}"
_PINNED_KEYS = rf"^\s*{_PINNED_KEY}(\s*,\s*{_PINNED_KEY}){{0,15}}\s*$"
_PINNED_KEYS_ALLOWED = "1 to 16 comma-separated `<kid>=<Ed25519 public key>`, base64url"


def _renamed(name: str, old: str) -> AliasChoices:
    """The environment variables of a renamed setting: its name, then its old name."""
    return AliasChoices(f"TRM_{name.upper()}", f"TRM_{old.upper()}")


class Settings(BaseSettings):
    """One settings class for the broker, its dispatcher and the reference node."""

    model_config = SettingsConfigDict(env_prefix="TRM_", extra="ignore", populate_by_name=True)

    # --- broker -------------------------------------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        pattern=_DATABASE_URL,
        json_schema_extra={"allowed": _DATABASE_URLS},
        description="The broker's database (SQLAlchemy async URL). The SQLite file and its "
        "folder are created on first use; use postgresql+asyncpg://… in production.",
    )
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address `trm-broker serve` listens on."
    )
    port: int = Field(8400, ge=1, le=65535, description="Port `trm-broker serve` listens on.")
    broker_key_file: Path = Field(
        Path("./var/broker-key.json"),
        description="The broker's own Ed25519 signing key (receipts, checkpoints); created on "
        "first start.",
    )
    broker_key: SecretStr | None = Field(
        None,
        description="The broker's key document (the JSON of a key file) from the environment, "
        "e.g. from a secret store, instead of TRM_BROKER_KEY_FILE; never logged.",
    )
    public_url: str | None = Field(
        None,
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="The broker's base URL as callers address it (their signatures cover "
        "it). Unset: the URL each request arrived on, allowed only when listening on "
        "loopback. Set it behind a reverse proxy.",
    )
    operator_key_file: Path = Field(
        Path("./var/operator-key.json"),
        description="The operator's key set: created by `trm-broker operator init`, used by "
        "`trm-broker participants …` to sign registry changes.",
    )
    broker_url: str = Field(
        "http://127.0.0.1:8400",
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="Base URL of the broker that `trm-broker participants …` calls.",
    )
    max_envelope_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest envelope, and largest request body of the broker and the node, "
        "accepted, in bytes (413 above, before any parsing).",
    )
    max_json_depth: int = Field(
        32,
        ge=4,
        le=256,
        description="Deepest nesting of arrays and objects a JSON body may have (400 above, "
        "found by a scan before parsing).",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="How long a client has to send a request's headers, on a new connection "
        "and between requests on a kept-alive one (408 and the connection closed after).",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="How long a client has to send a request's body once its headers are in "
        "(408 after).",
    )
    rate_per_second: float = Field(
        50.0,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="Signed requests each participant may make per second, on average, per "
        "broker process (429 with Retry-After above); 0: no limit.",
    )
    rate_burst: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Signed requests a participant may make at once above that rate.",
    )
    address_rate_per_second: float = Field(
        100.0,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="Requests one client address may make per second, per broker process, "
        "that are not authenticated as a participant (public reads, refused signatures, "
        "unknown paths); 429 above; 0: no limit.",
    )
    address_rate_burst: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Such requests one address may make at once above that rate.",
    )
    clock_skew_seconds: int = Field(
        300,
        ge=1,
        le=3600,
        description="How far an envelope's created_at, or a signed request's created time, "
        "may be from the receiver's clock.",
    )
    delivery_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="Total deadline of one push to a recipient's inbox: connect, send and "
        "read the answer (answers over 64 KiB are refused unread).",
    )
    delivery_poll_seconds: float = Field(
        1.0,
        ge=0.01,
        le=300,
        allow_inf_nan=False,
        description="How often an idle dispatcher looks for due deliveries.",
    )
    delivery_backoff_max_seconds: float = Field(
        300.0,
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="Upper bound of the wait between two delivery attempts.",
    )
    delivery_max_age_seconds: float = Field(
        7 * DAY,
        gt=0,
        le=365 * DAY,
        allow_inf_nan=False,
        description="How long a delivery is retried after it was queued (7 days by default); "
        "then it is a dead letter, with an alert and a ledger entry, until an operator "
        "re-queues it.",
    )
    delivery_concurrency: int = Field(
        16, ge=1, le=256, description="Pushes one dispatcher has in flight at once."
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="How many processes `trm-broker serve` runs, sharing its port, to use "
        "more than one core (PostgreSQL only). Each has its own database pool and background "
        "loops, which take turns; about one per core is a good start.",
    )
    run_dispatcher: bool = Field(
        True,
        description="Run the delivery dispatcher inside `trm-broker serve`. Set false where "
        "separate `trm-broker worker` processes run it (PostgreSQL only).",
    )
    worker_port: int = Field(
        8401,
        ge=1,
        le=65535,
        description="Port of `trm-broker worker`'s /healthz, /readyz and /metrics (on TRM_HOST).",
    )
    inbox_max_wait_seconds: float = Field(
        30.0,
        ge=0,
        le=300,
        allow_inf_nan=False,
        description="Longest wait of a long-poll on the pull inbox (GET /v1/inbox?wait=); "
        "0: no long-polls, every pull answers at once.",
    )
    allow_loopback_inboxes: bool = Field(
        False,
        description="Let inbox URLs point at loopback, where plain http is then allowed too "
        "(development only).",
    )
    allow_private_inboxes: bool = Field(
        False,
        description="Let inbox URLs resolve to private or reserved (non-global) addresses, for "
        "nodes on an internal network.",
    )
    ledger_origin: str = Field(
        "trm-broker.example/ledger",
        pattern=r"^[^\s+]+$",
        json_schema_extra={"allowed": "a name without spaces or '+'"},
        description="The ledger's origin line and signed-note key name (C2SP); set a name of "
        "your own, e.g. trm.<ministry domain>/ledger, before the first start: checkpoints "
        "name it.",
    )
    retention_seconds: int = Field(
        30 * DAY,
        ge=0,
        le=10 * 365 * DAY,
        description="How long an acknowledged message's sealed payload stays at the broker "
        "before it is deleted, with a payload.purged ledger entry (30 days by default); 0: "
        "deleted as soon as it is acknowledged.",
    )
    risk_max_age_seconds: float = Field(
        30 * DAY,
        gt=0,
        le=10 * 365 * DAY,
        allow_inf_nan=False,
        validation_alias=_renamed("risk_max_age_seconds", "risk_max_age"),
        description="How recent the risk assessment recommending return must be when a "
        "return is prepared (30 days by default).",
    )
    min_notice_seconds: float = Field(
        72 * 3600,
        ge=0,
        le=365 * DAY,
        allow_inf_nan=False,
        validation_alias=_renamed("min_notice_seconds", "min_notice"),
        description="How far ahead of the planned arrival a return must be prepared, so the "
        "receiving organisation can prepare (72 hours by default); 0: no notice needed.",
    )
    reception_grace_seconds: float = Field(
        48 * 3600,
        ge=0,
        le=365 * DAY,
        allow_inf_nan=False,
        validation_alias=_renamed("reception_grace_seconds", "reception_grace"),
        description="After the planned arrival, how long until a missing reception "
        "confirmation raises an alert (48 hours by default).",
    )
    monitoring_period_seconds: float = Field(
        365 * DAY,
        gt=0,
        le=3 * 365 * DAY,
        allow_inf_nan=False,
        validation_alias=_renamed("monitoring_period_seconds", "monitoring_period"),
        description="How long after reception monitoring reports are accepted (365 days by "
        "default, at most 3 years).",
    )
    monitoring_interval_seconds: float = Field(
        91 * DAY,
        gt=0,
        le=3 * 365 * DAY,
        allow_inf_nan=False,
        validation_alias=_renamed("monitoring_interval_seconds", "monitoring_interval"),
        description="How long without a monitoring report before an overdue alert (91 days by "
        "default).",
    )
    alert_check_seconds: float = Field(
        60.0,
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="How often the scheduler looks for overdue receptions and reports.",
    )
    report_max_days: int = Field(
        732,
        ge=1,
        le=3660,
        description="Longest period (`to` - `from`) one auditors' report may cover, in whole "
        "days (400 above).",
    )
    report_min_cell: int = Field(
        11,
        ge=1,
        le=1000,
        description="Counts smaller than this are suppressed in auditors' reports "
        "(k-anonymity; 11 as in the CTDC dataset).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log events written: debug, info, warning or error."
    )
    otel_enabled: bool = Field(
        False,
        description="Export OpenTelemetry traces of HTTP requests (method, route template and "
        "status only); needs the `otel` extra (pip install 'trm-broker[otel]'), or the broker "
        "refuses to start.",
    )
    otel_endpoint: str | None = Field(
        None,
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; unset: the "
        "standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT.",
    )

    # --- reference NRM node -------------------------------------------------------------
    node_database_url: str = Field(
        DEFAULT_NODE_DATABASE_URL,
        pattern=_DATABASE_URL,
        json_schema_extra={"allowed": _DATABASE_URLS},
        description="The node's own database (SQLAlchemy async URL; SQLite by default).",
    )
    node_host: str = Field(
        "127.0.0.1", min_length=1, description="Address `trm-broker node serve` listens on."
    )
    node_port: int = Field(
        8500, ge=1, le=65535, description="Port `trm-broker node serve` listens on."
    )
    node_broker_url: str = Field(
        "http://127.0.0.1:8400",
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="Base URL of the broker the node talks to.",
    )
    node_public_url: str | None = Field(
        None,
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="The node's base URL as the broker addresses it (the inbox URL without "
        "its path). Unset: the URL each request arrived on, allowed only when listening on "
        "loopback.",
    )
    node_key_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated key files (from `trm-broker keys new`) of the "
        "participants this node serves; this or TRM_NODE_KEYS is required.",
    )
    node_keys: SecretStr | None = Field(
        None,
        description="The node's key sets from the environment instead of files: a JSON array "
        "of key files' contents (from `trm-broker keys new`), read after TRM_NODE_KEY_FILES; "
        "never logged.",
    )
    node_api_token: SecretStr | None = Field(
        None,
        description="The administrator's bearer token of the node's local API: it reads and "
        "sends as every organisation the node serves. Give people their own tokens instead "
        "(`trm-broker node users add`). Unset, with no users and no single sign-on: the API "
        "answers 503.",
    )
    node_login_token_seconds: float = Field(
        8 * 3600,
        ge=60,
        le=7 * DAY,
        allow_inf_nan=False,
        description="How long a token made by a password login (POST /login) lasts.",
    )
    node_web_session_idle_seconds: float = Field(
        30 * 60,
        ge=1,
        le=DAY,
        allow_inf_nan=False,
        description="How long a web app session (docs/node.md, The web app) lasts without "
        "a page being opened: then its user signs in again.",
    )
    node_web_session_max_seconds: float = Field(
        12 * 3600,
        ge=1,
        le=7 * DAY,
        allow_inf_nan=False,
        description="How long a web app session lasts at most from its sign-in, however busy.",
    )
    node_oidc_issuer: str | None = Field(
        None,
        pattern=_HTTP_URL,
        json_schema_extra={"allowed": _HTTP_URLS},
        description="Single sign-on: the OpenID Connect provider's issuer URL (its discovery "
        "document is at <issuer>/.well-known/openid-configuration). Unset: no single sign-on. "
        "Needs TRM_NODE_OIDC_AUDIENCE.",
    )
    node_oidc_audience: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Single sign-on: the audience (`aud`) the provider's tokens must name: "
        "this node's client id at the provider.",
    )
    node_oidc_org_claim: str = Field(
        "trm_organisation",
        pattern=_CLAIM,
        json_schema_extra={"allowed": _CLAIMS},
        description="Single sign-on: the token claim that names the organisation (a "
        "participant this node serves) the person acts for.",
    )
    node_oidc_role_claim: str = Field(
        "trm_role",
        pattern=_CLAIM,
        json_schema_extra={"allowed": _CLAIMS},
        description="Single sign-on: the token claim that gives the role, case_worker, "
        "supervisor or read_only (a string, or a list holding exactly one of them).",
    )
    node_oidc_user_claim: str = Field(
        "sub",
        pattern=_CLAIM,
        json_schema_extra={"allowed": _CLAIMS},
        description="Single sign-on: the token claim the audit log names the person by "
        "(as oidc:<value>).",
    )
    node_oidc_cache_seconds: float = Field(
        3600.0,
        ge=1,
        le=DAY,
        allow_inf_nan=False,
        description="Single sign-on: how long the provider's discovery document and keys are "
        "kept before they are fetched again (a token signed with an unknown key fetches them "
        "at once).",
    )

    node_broker_keys: str | None = Field(
        None,
        pattern=_PINNED_KEYS,
        json_schema_extra={"allowed": _PINNED_KEYS_ALLOWED},
        description="The broker's signing keys the node believes, `<kid>=<public key>` as "
        "`trm-broker node pins` prints them: a receipt, push or key not listed is refused, "
        "whatever `GET /v1/broker` serves. Unset or empty: the node believes the keys the "
        "broker serves on first use, and logs `broker_keys_not_pinned` at start.",
    )
    node_operator_keys: str | None = Field(
        None,
        pattern=_PINNED_KEYS,
        json_schema_extra={"allowed": _PINNED_KEYS_ALLOWED},
        description="The broker operator's signing keys the node believes, `<kid>=<public "
        "key>`: a registry key is then used only if one of them signed its key statement. "
        "Unset or empty: the node believes the registry as the broker serves it, and logs "
        "`operator_keys_not_pinned` at start.",
    )

    node_pull: bool = Field(
        False,
        description="Fetch messages from the broker's pull inbox (GET /v1/inbox) instead of "
        "waiting for pushes: for a node the broker cannot reach.",
    )
    node_pull_wait_seconds: float = Field(
        20.0,
        ge=0,
        le=300,
        allow_inf_nan=False,
        description="How long each of the node's long-polls waits (at most the broker's "
        "TRM_INBOX_MAX_WAIT_SECONDS); 0: poll without waiting.",
    )
    node_withdrawn_retention_seconds: float = Field(
        30 * DAY,
        ge=0,
        le=365 * DAY,
        allow_inf_nan=False,
        description="How long the node keeps, restricted and unread, the content of a message "
        "received under a consent the person withdrew, before it deletes it (30 days by "
        "default, at most a year); 0: delete it at the next purge.",
    )
    node_alert_poll_seconds: float = Field(
        60.0,
        gt=0,
        le=DAY,
        allow_inf_nan=False,
        description="How often the node asks the broker for its participants' consent_withdrawn "
        "alerts, and deletes the content whose retention has passed.",
    )
    node_outbox_retry_base_seconds: float = Field(
        1.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="The node's outbox: the wait before the first resubmission of a message "
        "the broker did not answer (unreachable, 5xx, 429); it doubles at each failure, with "
        "jitter, up to TRM_NODE_OUTBOX_RETRY_MAX_SECONDS.",
    )
    node_outbox_retry_max_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="The node's outbox: the longest wait between two submissions of a queued "
        "message; also how soon after a broker outage ends the last queued messages go.",
    )
    node_status_poll_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="How soon the node reads again, at the broker, the status of a message it "
        "sent that is not yet acknowledged, rejected or dropped; a message whose status does "
        "not change is read less and less often, at most 30 times this apart (a dead letter: "
        "that often, for an operator's re-queue). A receipt is read at once.",
    )
    node_idempotency_key_seconds: float = Field(
        DAY,
        ge=60,
        le=30 * DAY,
        allow_inf_nan=False,
        description="How long the node keeps the answer to a request sent with an "
        "Idempotency-Key (a day by default): a retry with the key within that time gets the "
        "first answer; after it, the key is forgotten.",
    )
    node_prefer_wait_max_seconds: float = Field(
        30.0,
        ge=0,
        le=120,
        allow_inf_nan=False,
        description="The longest a send waits for the broker's receipt or refusal when the "
        "caller sends `Prefer: wait=<seconds>` (RFC 7240); a longer wait asked is cut to "
        "this; 0: never wait, always answer 202 queued.",
    )

    @field_validator("node_key_files", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()) for part in value.split(",") if part.strip()]
        return value

    @field_validator("node_broker_keys", "node_operator_keys", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty pin (``TRM_NODE_BROKER_KEYS=``, as a compose file's default leaves it)
        is no pin."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("*", mode="before")
    @classmethod
    def _iso_durations(cls, value: object, info: ValidationInfo) -> object:
        """A duration may be written in ISO 8601 (``P30D``), or as the old names of the
        renamed durations took it (``3 days, 0:00:00``): turned into seconds here. Anything
        else goes on to the number check, which names the problem."""
        if not (info.field_name or "").endswith("_seconds") or not isinstance(value, str):
            return value
        try:
            float(value)
        except ValueError:
            try:
                return _DURATION.validate_python(value.strip()).total_seconds()
            except ValidationError:
                return value
        return value

    # --- the durations the domain uses as timedeltas --------------------------------------

    @property
    def risk_max_age(self) -> timedelta:
        return timedelta(seconds=self.risk_max_age_seconds)

    @property
    def min_notice(self) -> timedelta:
        return timedelta(seconds=self.min_notice_seconds)

    @property
    def reception_grace(self) -> timedelta:
        return timedelta(seconds=self.reception_grace_seconds)

    @property
    def monitoring_period(self) -> timedelta:
        return timedelta(seconds=self.monitoring_period_seconds)

    @property
    def monitoring_interval(self) -> timedelta:
        return timedelta(seconds=self.monitoring_interval_seconds)

    @property
    def node_withdrawn_retention(self) -> timedelta:
        return timedelta(seconds=self.node_withdrawn_retention_seconds)


class InvalidSettings(ValueError):
    """Settings out of their bounds: ``problems`` has one readable line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; :class:`InvalidSettings` names every bad one."""
    from trm_broker.settings_explained import explain

    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings(explain(exc)) from None

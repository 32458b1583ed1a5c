"""Settings, read from the environment (WHARF_*) with sensible defaults for a laptop."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from wharf.core.paths import state_home


def _default_database_url() -> str:
    return f"sqlite:///{state_home() / 'wharf.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHARF_", extra="ignore")

    database_url: str = Field(
        default_factory=_default_database_url,
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://…",
    )
    host: str = "127.0.0.1"
    port: int = 8700
    log_format: str = Field(default="json", pattern="^(json|console)$")
    log_level: str = "info"
    secret_key: str | None = Field(
        default=None,
        description="A passphrase that seals credentials at rest (stretched with scrypt); "
        "when unset, the key file is used",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="A file of 32 random bytes that seals credentials at rest; made beside the "
        "database (or in the state directory) when missing",
    )
    previous_secret_keys: str = Field(
        default="",
        description="Keys kept for reading while `wharf secrets rotate` re-seals: "
        "comma-separated passphrases or file:<path>",
    )
    admin_password: str | None = Field(
        default=None, description="Password of the first user, 'admin' (generated when unset)"
    )
    allow_loopback_clusters: bool = Field(
        default=False,
        description="Accept clusters on loopback addresses (the lab; never in production)",
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body accepted (413 above it)"
    )
    metrics_token: str | None = Field(
        default=None, description="Bearer token a Prometheus scraper sends for /metrics"
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without authentication (a private network)"
    )
    secure_cookies: bool = Field(
        default=False,
        description="Mark session cookies Secure even over plain HTTP (TLS ends at a proxy)",
    )
    controllers: bool = Field(default=True, description="Run the controllers in this process")
    assets_dir: Path = Field(
        default=Path(__file__).resolve().parents[3] / "node_modules",
        description="npm packages of the console (./dev setup installs them)",
    )
    registry_token_issuer: str = Field(
        default="wharf", description="`iss` of registry tokens (the registry's auth.token.issuer)"
    )
    registry_token_seconds: int = Field(
        default=300, ge=60, le=86400, description="Lifetime of a registry token (at least 60 s)"
    )
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus that release analysis queries and alert rules are checked by "
        "and reloaded in, e.g. http://prometheus:9090",
    )
    log_store_url: str | None = Field(
        default=None,
        description="VictoriaLogs that log search queries (one store tenant per Wharf tenant), "
        "e.g. http://victorialogs:9428 (unset: search answers 503 logs-unavailable)",
    )
    log_store_retention: str = Field(
        default="7d",
        pattern=r"^[0-9]{1,5}[dw]$",
        description="The log store's own retention (VictoriaLogs' -retentionPeriod, in days or "
        "weeks): the default and the longest a tenant's spec.logs.retention may be",
    )
    log_retention_seconds: float = Field(
        default=86400.0,
        gt=0,
        le=30 * 86400,
        description="How often, at most, each tenant's lines older than its retention are "
        "deleted from the log store (a delete rewrites stored data: keep it rare)",
    )
    alert_rules_dir: Path | None = Field(
        default=None,
        description="Directory Wharf writes the alert rule files into; Prometheus' rule_files "
        "lists <dir>/*.yml (unset: alert rules are stored, not evaluated)",
    )
    alertmanager_url: str | None = Field(
        default=None, description="Alertmanager that silences are created in"
    )
    alert_receiver_token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token Alertmanager sends to Wharf's alert "
        "receiver; Wharf generates it when missing (default: beside the database)",
    )
    smtp_host: str | None = Field(default=None, description="SMTP server for email channels")
    smtp_port: int = Field(default=25, description="Its port")
    smtp_from: str = Field(default="wharf@localhost", description="The sender of alert emails")
    replica: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1,
        max_length=200,
        # It names the replica in HTTP headers (the clusters' audit logs) and in NOTIFYs.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="This server's name among replicas (the chart gives the pod's name)",
    )
    lease_seconds: float = Field(
        default=15.0,
        ge=1.0,
        le=3600.0,
        description="How long a replica's hold on a cluster lasts unrenewed (PostgreSQL): "
        "a replica that dies loses its clusters to the others within this time",
    )
    outbound_allow: str = Field(
        default="",
        description="Internal addresses or networks tenants' release webhooks may reach, "
        "comma-separated (e.g. 10.20.0.0/16); everything internal is refused otherwise",
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Seconds between two probes of each cluster"
    )
    cluster_probe_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds a cluster's probe (/version) may take before the cluster is "
        "Unreachable: a stopped API server is found within heartbeat_seconds + this",
    )
    cluster_request_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds any request to a cluster may take (connect, read) before it fails",
    )
    watch_timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="A watch's timeoutSeconds; the client relists when nothing has come for "
        "5 s longer (a silent partition is found within this and a request timeout)",
    )
    failover_grace_seconds: float = Field(
        default=15.0,
        ge=0,
        le=86400,
        description="How long a cluster stays Unreachable before its replicas move to the "
        "application's other clusters, unless spec.failover.gracePeriodSeconds says",
    )
    resync_seconds: float = 30.0

    @property
    def sqlite_path(self) -> Path | None:
        prefix = "sqlite:///"
        return (
            Path(self.database_url[len(prefix) :]) if self.database_url.startswith(prefix) else None
        )

    def key_file(self) -> Path:
        if self.secret_key_file is not None:
            return self.secret_key_file
        base = self.sqlite_path.parent if self.sqlite_path else state_home()
        return base / "secret.key"

    def receiver_token_file(self) -> Path:
        if self.alert_receiver_token_file is not None:
            return self.alert_receiver_token_file
        base = self.sqlite_path.parent if self.sqlite_path else state_home()
        return base / "alert-receiver.token"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

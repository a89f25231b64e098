"""Configuration, read once from the environment into one frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from postfuze_imports.errors import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str
    redis_url: str
    # Derives the key that encrypts stored credentials and the key that signs cursors.
    secret_key: str
    # Lifts the outbound guard (https only, public addresses only) for local development.
    allow_private_networks: bool = False
    log_level: str = "INFO"
    # "text" for people, "json" for log pipelines.
    log_format: str = "text"
    database_pool_size: int = 10
    # Import jobs one worker process runs at once.
    worker_concurrency: int = 10
    # Seconds a claimed job stays owned by its worker without a renewal.
    lease_seconds: int = 30
    # Claims whose worker vanished before the job is failed.
    max_job_crashes: int = 3
    # Seconds between the worker's sweeps for lost wake-ups and expired leases.
    sweep_interval_seconds: int = 10
    # Seconds an outbound request to a network may take before it is retried.
    network_timeout_seconds: float = 30.0
    bluesky_default_pds: str = "https://bsky.social"
    # Requests per organization per 60-second window.
    rate_limit_global: int = 600
    rate_limit_accounts_write: int = 20
    rate_limit_webhooks_write: int = 60
    # Webhook deliveries one dispatcher run sends at once.
    webhook_concurrency: int = 50
    webhook_timeout_seconds: float = 15.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; missing required ones raise."""
        env = os.environ if environ is None else environ
        missing = [
            name
            for name in ("DATABASE_URL", "REDIS_URL", "POSTFUZE_SECRET_KEY")
            if not env.get(name)
        ]
        if missing:
            raise ConfigurationError(
                f"missing environment variables: {', '.join(missing)}; "
                "set them, or run through the Makefile, which starts a local stack"
            )
        secret_key = env["POSTFUZE_SECRET_KEY"]
        if len(secret_key) < 32:
            raise ConfigurationError(
                "POSTFUZE_SECRET_KEY must be at least 32 characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        log_level = env.get("POSTFUZE_LOG_LEVEL", "INFO").upper()
        if log_level not in _LOG_LEVELS:
            raise ConfigurationError(
                f"POSTFUZE_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, not {log_level!r}"
            )
        log_format = env.get("POSTFUZE_LOG_FORMAT", "text")
        if log_format not in ("text", "json"):
            raise ConfigurationError(
                f"POSTFUZE_LOG_FORMAT must be 'text' or 'json', not {log_format!r}"
            )
        return cls(
            database_url=env["DATABASE_URL"],
            redis_url=env["REDIS_URL"],
            secret_key=secret_key,
            allow_private_networks=_bool(env, "POSTFUZE_ALLOW_PRIVATE_NETWORKS", False),
            log_level=log_level,
            log_format=log_format,
            database_pool_size=_int(env, "POSTFUZE_DATABASE_POOL_SIZE", 10, minimum=2),
            worker_concurrency=_int(env, "POSTFUZE_WORKER_CONCURRENCY", 10, minimum=1),
            lease_seconds=_int(env, "POSTFUZE_LEASE_SECONDS", 30, minimum=5),
            max_job_crashes=_int(env, "POSTFUZE_MAX_JOB_CRASHES", 3, minimum=1),
            sweep_interval_seconds=_int(env, "POSTFUZE_SWEEP_INTERVAL_SECONDS", 10, minimum=1),
            network_timeout_seconds=float(
                _int(env, "POSTFUZE_NETWORK_TIMEOUT_SECONDS", 30, minimum=1)
            ),
            bluesky_default_pds=env.get("POSTFUZE_BLUESKY_DEFAULT_PDS", "https://bsky.social"),
            rate_limit_global=_int(env, "POSTFUZE_RATE_LIMIT_GLOBAL", 600, minimum=1),
            rate_limit_accounts_write=_int(
                env, "POSTFUZE_RATE_LIMIT_ACCOUNTS_WRITE", 20, minimum=1
            ),
            rate_limit_webhooks_write=_int(
                env, "POSTFUZE_RATE_LIMIT_WEBHOOKS_WRITE", 60, minimum=1
            ),
            webhook_concurrency=_int(env, "POSTFUZE_WEBHOOK_CONCURRENCY", 50, minimum=1),
        )


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value}")
    return value

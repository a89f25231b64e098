"""Rows of the database as frozen records, built in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from postfuze_imports.db import Record
from postfuze_imports.providers.base import PLATFORMS

__all__ = ["PLATFORMS", "AccountStatus", "ApiKey", "ImportJob", "JobStatus", "SocialAccount"]


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    TOKEN_EXPIRED = "token_expired"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    id: UUID
    organization_id: UUID
    livemode: bool
    scopes: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Record) -> ApiKey:
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            livemode=row["livemode"],
            scopes=tuple(row["scopes"]),
        )


@dataclass(frozen=True, kw_only=True)
class SocialAccount:
    id: UUID
    organization_id: UUID
    livemode: bool
    platform: str
    tenant_id: str | None
    username: str
    display_name: str | None
    network_unique_id: str
    status: AccountStatus
    api_base_url: str | None
    credentials: bytes  # encrypted
    token_expires_at: datetime | None
    last_synced_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Record) -> SocialAccount:
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            livemode=row["livemode"],
            platform=row["platform"],
            tenant_id=row["tenant_id"],
            username=row["username"],
            display_name=row["display_name"],
            network_unique_id=row["network_unique_id"],
            status=AccountStatus(row["status"]),
            api_base_url=row["api_base_url"],
            credentials=row["credentials"],
            token_expires_at=row["token_expires_at"],
            last_synced_at=row["last_synced_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, kw_only=True)
class ImportJob:
    id: str
    organization_id: UUID
    livemode: bool
    social_account_id: UUID
    tenant_id: str | None
    status: JobStatus
    from_date: str | None
    to_date: str | None
    window_start: datetime | None
    window_end: datetime | None
    limit: int
    imported_count: int | None
    fetched_count: int
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    run_after: datetime
    lease_token: UUID | None
    crash_count: int
    retry_count: int
    wait_count: int
    checkpoint: dict[str, Any] | None
    cancel_requested_at: datetime | None

    @classmethod
    def from_row(cls, row: Record) -> ImportJob:
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            livemode=row["livemode"],
            social_account_id=row["social_account_id"],
            tenant_id=row["tenant_id"],
            status=JobStatus(row["status"]),
            from_date=row["from_date"],
            to_date=row["to_date"],
            window_start=row["window_start"],
            window_end=row["window_end"],
            limit=row["post_limit"],
            imported_count=row["imported_count"],
            fetched_count=row["fetched_count"],
            error_message=row["error_message"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            created_at=row["created_at"],
            run_after=row["run_after"],
            lease_token=row["lease_token"],
            crash_count=row["crash_count"],
            retry_count=row["retry_count"],
            wait_count=row["wait_count"],
            checkpoint=row["checkpoint"],
            cancel_requested_at=row["cancel_requested_at"],
        )

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.COMPLETED, JobStatus.FAILED)

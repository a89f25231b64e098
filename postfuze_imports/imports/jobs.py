"""Import jobs on the API side: creation, reading, listing and cancel."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from postfuze_imports.db import Connection, Pool, q, required
from postfuze_imports.errors import Conflict
from postfuze_imports.imports.window import Bound
from postfuze_imports.records import ImportJob, JobStatus, SocialAccount
from postfuze_imports.timestamps import format_optional_timestamp as timestamp

log = logging.getLogger(__name__)

CANCELED_MESSAGE = "The import was canceled before it finished."

# Runs inside the transaction that gives a job its final state, so whatever it writes
# (the webhook event and its deliveries) commits together with that state.
FinishHook = Callable[[Connection, ImportJob], Awaitable[None]]


async def no_finish_hook(connection: Connection, job: ImportJob) -> None:
    """A finish hook that writes nothing."""


def new_job_id() -> str:
    return "imp_" + secrets.token_hex(12)


def job_payload(job: ImportJob) -> dict[str, Any]:
    """Return the import job object of the API and of webhook events."""

    return {
        "id": job.id,
        "social_account_id": str(job.social_account_id),
        "tenant_id": job.tenant_id,
        "status": job.status.value,
        "from_date": job.from_date,
        "to_date": job.to_date,
        "limit": job.limit,
        "imported_count": job.imported_count,
        "error_message": job.error_message,
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "created_at": timestamp(job.created_at),
        "livemode": job.livemode,
    }


async def create_job(
    pool: Pool,
    account: SocialAccount,
    *,
    from_bound: Bound | None,
    to_bound: Bound | None,
    limit: int,
) -> ImportJob:
    """Insert a pending job; the caller sends the wake-up after this commits."""
    row = await pool.fetchrow(
        q("insert_import_job"),
        new_job_id(),
        account.organization_id,
        account.livemode,
        account.id,
        account.tenant_id,
        from_bound.echo if from_bound else None,
        to_bound.echo if to_bound else None,
        from_bound.instant if from_bound else None,
        to_bound.instant if to_bound else None,
        limit,
    )
    job = ImportJob.from_row(required(row))
    log.info(
        "queued import %s for account %s (limit %d)",
        job.id,
        account.id,
        limit,
        extra={"import_id": job.id, "account_id": str(account.id)},
    )
    return job


async def get_job(
    pool: Pool, organization_id: UUID, livemode: bool, account_id: UUID, job_id: str
) -> ImportJob | None:
    row = await pool.fetchrow(q("get_import_job"), organization_id, livemode, account_id, job_id)
    return None if row is None else ImportJob.from_row(row)


async def list_jobs(
    pool: Pool,
    organization_id: UUID,
    livemode: bool,
    account_id: UUID,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[ImportJob]:
    """Return up to `limit + 1` jobs newest first, after the keyset position `after`."""
    rows = await pool.fetch(
        q("list_import_jobs"),
        organization_id,
        livemode,
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return [ImportJob.from_row(row) for row in rows]


async def finish_unleased(
    connection: Connection,
    job: ImportJob,
    status: JobStatus,
    error_message: str | None,
    on_finish: FinishHook,
) -> ImportJob:
    """Finish a job no live worker holds, inside the caller's transaction."""
    row = await connection.fetchrow(
        q("finish_import_job"), job.id, job.lease_token, status.value, error_message
    )
    if row is None:
        raise Conflict(f"import {job.id} changed while it was being finished; retry")
    finished = ImportJob.from_row(row)
    await on_finish(connection, finished)
    return finished


async def cancel_job(
    pool: Pool,
    organization_id: UUID,
    livemode: bool,
    account_id: UUID,
    job_id: str,
    on_finish: FinishHook,
) -> ImportJob | None:
    """Cancel a job: at once when no worker has its lease, else at the worker's next page.

    Returns None when the job does not exist for this organization; raises Conflict when
    it has already finished.
    """
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(q("lock_import_job"), job_id)
        if (
            row is None
            or row["organization_id"] != organization_id
            or row["livemode"] != livemode
            or row["social_account_id"] != account_id
        ):
            return None
        job = ImportJob.from_row(row)
        if job.finished:
            raise Conflict(f"import {job.id} has already finished as {job.status.value}")
        lease_live = (
            job.lease_token is not None
            and row["lease_expires_at"] is not None
            and row["lease_expires_at"] > datetime.now(UTC)
        )
        if not lease_live:
            finished = await finish_unleased(
                connection, job, JobStatus.FAILED, CANCELED_MESSAGE, on_finish
            )
            log.info(
                "canceled import %s before a worker held it",
                job.id,
                extra={"import_id": job.id, "account_id": str(account_id)},
            )
            return finished
        updated = await connection.fetchrow(q("request_cancel"), job.id)
        log.info(
            "requested cancel of running import %s",
            job.id,
            extra={"import_id": job.id, "account_id": str(account_id)},
        )
        return ImportJob.from_row(required(updated))

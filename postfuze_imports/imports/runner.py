"""Running one import job on a worker: claim, page through the network, finish.

Every write after the claim is fenced by the job's lease token. A worker that lost its
lease (paused, partitioned, or too slow) finds no row to update and stops, so it cannot
overwrite the progress of the worker that took the job over. A page's posts, the job's
counters and its checkpoint commit in one transaction, so a resumed job neither stores
a post twice nor counts it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from postfuze_imports.crypto import Secrets
from postfuze_imports.db import Pool, q, required
from postfuze_imports.errors import (
    LeaseLost,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTransientError,
)
from postfuze_imports.imports.jobs import CANCELED_MESSAGE, FinishHook, job_payload
from postfuze_imports.providers.base import AccountContext, NormalizedPost, Provider, Window
from postfuze_imports.records import AccountStatus, ImportJob, JobStatus, SocialAccount
from postfuze_imports.settings import Settings

log = logging.getLogger(__name__)

# Transient failures in a row (timeouts, 5xx, unexpected errors) before a job fails.
MAX_RETRIES = 5
# Rate-limit waits in a row, with no page stored between them, before a job fails.
MAX_RATE_LIMIT_WAITS = 20
# Backoff before retry k (1-based) is BASE * 4**(k-1) seconds, with ±20 % jitter:
# 5 s, 20 s, 80 s, 320 s.
RETRY_BASE_SECONDS = 5.0


class ProviderLookup(Protocol):
    def get(self, platform: str, *, livemode: bool) -> Provider: ...


@dataclass(frozen=True)
class Wakers:
    """Best-effort wake-ups sent after a transaction commits."""

    wake_import: Callable[[str | None, float], Awaitable[bool]]
    wake_dispatcher: Callable[[], Awaitable[bool]]


@dataclass
class _StopSignal:
    reason: str | None = None  # "cancel" or "lease_lost"
    # Set when the run starts to give up its lease (finish or release): from then on the
    # lease ends by design, and the heartbeat must not interrupt the wake-ups after it.
    releasing: bool = False


# The stop signal of the job the current task runs, shared with its heartbeat.
_current_signal: contextvars.ContextVar[_StopSignal] = contextvars.ContextVar("stop_signal")


def _mark_releasing() -> None:
    signal = _current_signal.get(None)
    if signal is not None:
        signal.releasing = True


class JobRunner:
    """Runs import jobs; one instance per worker process."""

    def __init__(
        self,
        *,
        pool: Pool,
        settings: Settings,
        secrets: Secrets,
        providers: ProviderLookup,
        on_finish: FinishHook,
        wakers: Wakers,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.secrets = secrets
        self.providers = providers
        self.on_finish = on_finish
        self.wakers = wakers

    async def run(self, job_id: str | None) -> str | None:
        """Claim `job_id` (or any due job when None) and run it; return the id it ran."""
        token = uuid.uuid4()
        row = await self.pool.fetchrow(
            q("claim_import_job"), job_id, token, self.settings.lease_seconds
        )
        if row is None:
            log.debug("no claimable import for wake-up %s", job_id or "any")
            return None
        job = ImportJob.from_row(row)
        ids = _log_ids(job)
        log.info(
            "started import %s for account %s (attempt %d, %d of %d fetched so far)",
            job.id,
            job.social_account_id,
            job.crash_count + job.retry_count + 1,
            job.fetched_count,
            job.limit,
            extra=ids,
        )
        # NOTE: a lease also expires when PostgreSQL is unreachable for longer than the
        # lease, so a database outage counts here as a crash of every running job.
        if job.crash_count > self.settings.max_job_crashes:
            await self._finish(
                job,
                token,
                JobStatus.FAILED,
                f"The import stopped {job.crash_count} times because the worker running "
                "it exited; it was given up.",
            )
            return job.id
        if job.cancel_requested_at is not None:
            await self._finish(job, token, JobStatus.FAILED, CANCELED_MESSAGE)
            return job.id

        signal = _StopSignal()
        _current_signal.set(signal)
        owner = asyncio.current_task()
        assert owner is not None
        heartbeat = asyncio.create_task(self._heartbeat(job, token, signal, owner))
        try:
            await self._run_claimed(job, token)
        except asyncio.CancelledError:
            if signal.reason is None:
                # The worker is shutting down: hand the job back at once.
                await asyncio.shield(self._release(job, token, delay=0, retry=False))
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if signal.reason == "cancel":
                await self._finish_if_leased(job, token, JobStatus.FAILED, CANCELED_MESSAGE)
            else:
                log.warning(
                    "lost the lease of import %s; another worker owns it", job.id, extra=ids
                )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return job.id

    async def _run_claimed(self, job: ImportJob, token: uuid.UUID) -> None:
        ids = _log_ids(job)
        try:
            await self._import(job, token)
        except LeaseLost:
            log.warning("lost the lease of import %s; another worker owns it", job.id, extra=ids)
        except ProviderRateLimited as error:
            delay = max(1.0, error.retry_after)
            # Read again: a page stored in this run has reset the count.
            waits = await self.pool.fetchval(q("get_wait_count"), job.id) or 0
            if waits + 1 > MAX_RATE_LIMIT_WAITS:
                await self._finish_if_leased(
                    job,
                    token,
                    JobStatus.FAILED,
                    f"The network asked to wait {waits + 1} times in a row without "
                    f"returning posts; last answer: {error}",
                )
                return
            log.info(
                "import %s waits %.0f s for the network's rate limit: %s",
                job.id,
                delay,
                error,
                extra={**ids, "wait_seconds": delay},
            )
            await self._release(job, token, delay=delay, retry=False, wait=True)
        except ProviderAuthError as error:
            await self.pool.execute(q("mark_account_token_expired"), job.social_account_id)
            await self._finish_if_leased(
                job,
                token,
                JobStatus.FAILED,
                f"The network rejected the account's credentials: {error}. "
                "Reconnect the account and start a new import.",
            )
        except ProviderTransientError as error:
            await self._retry_or_fail(job, token, str(error))
        except ProviderError as error:
            await self._finish_if_leased(job, token, JobStatus.FAILED, str(error))
        except Exception as error:
            # A bug or an unexpected response: retried like a network failure, so it ends
            # the job after MAX_RETRIES instead of counting as a worker crash.
            log.exception("import %s hit an unexpected error", job.id, extra=ids)
            await self._retry_or_fail(job, token, f"internal error ({type(error).__name__})")

    async def _import(self, job: ImportJob, token: uuid.UUID) -> None:
        ids = _log_ids(job)
        account_row = await self.pool.fetchrow(q("get_social_account_by_id"), job.social_account_id)
        account = SocialAccount.from_row(required(account_row))
        if account.status is AccountStatus.DISCONNECTED:
            await self._finish(
                job, token, JobStatus.FAILED, "The account was disconnected before the import ran."
            )
            return
        remaining = job.limit - job.fetched_count
        provider = self.providers.get(account.platform, livemode=account.livemode)
        context = AccountContext(
            account_id=str(account.id),
            platform=account.platform,
            username=account.username,
            network_unique_id=account.network_unique_id,
            api_base_url=account.api_base_url,
            credentials=self.secrets.decrypt_json(account.credentials),
            save_credentials=lambda credentials: self._save_credentials(account, credentials),
        )
        window = Window(start=job.window_start, end=job.window_end, limit=job.limit)
        page_number = 0
        async for page in provider.fetch(context, window, job.checkpoint):
            if remaining <= 0:
                break
            posts = [post for post in page.posts if window.contains(post.published_at)]
            posts = posts[:remaining]
            inserted, cancel_requested = await self._store_page(
                job, token, account, posts, page.checkpoint
            )
            remaining -= len(posts)
            if posts:
                page_number += 1
                log.info(
                    "import %s stored page %d: %d fetched, %d new, %d left of the limit",
                    job.id,
                    page_number,
                    len(posts),
                    inserted,
                    remaining,
                    extra={**ids, "fetched": len(posts), "inserted": inserted},
                )
            if cancel_requested:
                await self._finish(job, token, JobStatus.FAILED, CANCELED_MESSAGE)
                return
        await self._finish(job, token, JobStatus.COMPLETED, None)

    async def _store_page(
        self,
        job: ImportJob,
        token: uuid.UUID,
        account: SocialAccount,
        posts: Sequence[NormalizedPost],
        checkpoint: dict[str, Any] | None,
    ) -> tuple[int, bool]:
        """Store a page and its checkpoint in one transaction fenced by the lease."""
        async with self.pool.acquire() as connection, connection.transaction():
            locked = await connection.fetchrow(q("lock_leased_job"), job.id, token)
            if locked is None:
                raise LeaseLost(job.id)
            inserted = 0
            if posts:
                rows = await connection.fetch(
                    q("insert_posts"),
                    account.organization_id,
                    account.livemode,
                    account.id,
                    account.platform,
                    job.id,
                    [_post_row(post) for post in posts],
                )
                inserted = len(rows)
            row = await connection.fetchrow(
                q("record_page"),
                job.id,
                token,
                inserted,
                len(posts),
                checkpoint,
                self.settings.lease_seconds,
            )
        return inserted, required(row)["cancel_requested_at"] is not None

    async def _save_credentials(self, account: SocialAccount, credentials: dict[str, Any]) -> None:
        await self.pool.execute(
            q("update_account_credentials"),
            account.id,
            self.secrets.encrypt_json(credentials),
            parse_expiry(credentials.get("token_expires_at")),
        )
        log.info(
            "stored refreshed credentials of account %s",
            account.id,
            extra={"account_id": str(account.id)},
        )

    async def _heartbeat(
        self, job: ImportJob, token: uuid.UUID, signal: _StopSignal, owner: asyncio.Task[Any]
    ) -> None:
        """Renew the lease and watch for a cancel while the job waits on the network.

        On a cancel request or a lost lease it cancels `owner`, the task running the job,
        which interrupts whatever network call or rate-limit wait it is in.
        """
        interval = min(2.0, self.settings.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                row = await self.pool.fetchrow(
                    q("renew_lease"), job.id, token, self.settings.lease_seconds
                )
            except (asyncpg.PostgresError, OSError) as error:
                log.warning(
                    "could not renew the lease of import %s: %s", job.id, error, extra=_log_ids(job)
                )
                continue
            if signal.releasing:
                return
            if row is None:
                signal.reason = "lease_lost"
            elif row["cancel_requested_at"] is not None:
                signal.reason = "cancel"
            else:
                continue
            owner.cancel()
            return

    async def _retry_or_fail(self, job: ImportJob, token: uuid.UUID, message: str) -> None:
        attempt = job.retry_count + 1
        if attempt >= MAX_RETRIES:
            await self._finish_if_leased(
                job,
                token,
                JobStatus.FAILED,
                f"The import failed {attempt} times in a row; last error: {message}",
            )
            return
        delay = RETRY_BASE_SECONDS * 4 ** (attempt - 1) * random.uniform(0.8, 1.2)  # noqa: S311
        log.warning(
            "import %s failed (attempt %d of %d), retrying in %.0f s: %s",
            job.id,
            attempt,
            MAX_RETRIES,
            delay,
            message,
            extra={**_log_ids(job), "attempt": attempt, "wait_seconds": delay},
        )
        await self._release(job, token, delay=delay, retry=True)

    async def _release(
        self,
        job: ImportJob,
        token: uuid.UUID,
        *,
        delay: float,
        retry: bool,
        wait: bool = False,
    ) -> None:
        _mark_releasing()
        row = await self.pool.fetchrow(
            q("release_import_job"), job.id, token, delay, 1 if retry else 0, 1 if wait else 0
        )
        if row is None:
            return
        await self.wakers.wake_import(job.id, delay)

    async def _finish_if_leased(
        self, job: ImportJob, token: uuid.UUID, status: JobStatus, message: str | None
    ) -> None:
        try:
            await self._finish(job, token, status, message)
        except LeaseLost:
            log.warning(
                "lost the lease of import %s before finishing it", job.id, extra=_log_ids(job)
            )

    async def _finish(
        self, job: ImportJob, token: uuid.UUID, status: JobStatus, message: str | None
    ) -> None:
        """Write the final state and its webhook event in one transaction, then wake others."""
        _mark_releasing()
        async with self.pool.acquire() as connection, connection.transaction():
            locked = await connection.fetchrow(q("lock_leased_job"), job.id, token)
            if locked is None:
                raise LeaseLost(job.id)
            if status is JobStatus.FAILED and message is not None and locked["imported_count"]:
                # A failed job keeps the posts it stored, and the message gives their count.
                message = (
                    f"{message} {locked['imported_count']} posts were imported before it stopped."
                )
            row = await connection.fetchrow(
                q("finish_import_job"), job.id, token, status.value, message
            )
            finished = ImportJob.from_row(required(row))
            if status is JobStatus.COMPLETED:
                await connection.execute(q("mark_account_synced"), job.social_account_id)
            await self.on_finish(connection, finished)
        payload = job_payload(finished)
        level = logging.INFO if status is JobStatus.COMPLETED else logging.WARNING
        log.log(
            level,
            "finished import %s as %s: %s posts imported%s",
            job.id,
            status.value,
            payload["imported_count"],
            f"; {message}" if message else "",
            extra={
                **_log_ids(job),
                "status": status.value,
                "imported_count": payload["imported_count"],
            },
        )
        next_row = await self.pool.fetchrow(q("next_job_of_account"), job.social_account_id)
        if next_row is not None:
            await self.wakers.wake_import(next_row["id"], 0)
        await self.wakers.wake_dispatcher()


def parse_expiry(value: object) -> datetime | None:
    """Parse a stored `token_expires_at` (ISO 8601 text) into an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def clean_text(value: str) -> str:
    """Make text storable: PostgreSQL rejects NUL, and UTF-8 cannot encode lone surrogates."""
    text = value.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Pairs survive the UTF-16 round trip; a lone surrogate becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def clean_json(value: Any) -> Any:
    """Apply `clean_text` to every string, key included, of a JSON value."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value


def _post_row(post: NormalizedPost) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "platform_post_id": clean_text(post.platform_post_id),
        "platform_post_url": clean_text(post.platform_post_url) if post.platform_post_url else None,
        "content": clean_text(post.content),
        "media": clean_json(
            [
                {"type": media.type, "url": media.url, "thumbnail_url": media.thumbnail_url}
                for media in post.media
            ]
        ),
        "published_at": post.published_at.astimezone(UTC).isoformat(),
        "metrics": clean_json(dict(post.metrics)),
        "raw": clean_json(dict(post.raw)),
    }


def _log_ids(job: ImportJob) -> dict[str, Any]:
    return {"import_id": job.id, "account_id": str(job.social_account_id)}

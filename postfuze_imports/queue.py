"""Wake-ups sent to the workers through arq.

A wake-up only signals that work may be due, because PostgreSQL stores the work itself. Sending is
best effort: a lost wake-up is found again by the worker's sweep, so a failure here is
logged and never fails the caller.
"""

from __future__ import annotations

import logging
import uuid

from arq.connections import ArqRedis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

QUEUE_NAME = "postfuze:imports"
RUN_IMPORT = "run_import"
DISPATCH_WEBHOOKS = "dispatch_webhooks"


async def wake_import(redis: ArqRedis | None, job_id: str | None, *, delay: float = 0) -> bool:
    """Ask a worker to run `job_id` (or any due job when None); return whether it was sent."""
    if redis is None:
        return False
    try:
        # A unique arq job id: arq refuses an id whose earlier run still has a result.
        await redis.enqueue_job(
            RUN_IMPORT,
            job_id,
            _job_id=f"{RUN_IMPORT}:{job_id or 'any'}:{uuid.uuid4().hex}",
            _queue_name=QUEUE_NAME,
            _defer_by=delay if delay > 0 else None,
        )
    except (RedisError, OSError) as error:
        log.warning(
            "could not send the wake-up for import %s; the sweep will find it: %s",
            job_id,
            error,
            extra={"import_id": job_id},
        )
        return False
    return True


async def wake_dispatcher(redis: ArqRedis | None) -> bool:
    """Ask a worker to send due webhook deliveries; return whether it was sent."""
    if redis is None:
        return False
    try:
        await redis.enqueue_job(
            DISPATCH_WEBHOOKS,
            _job_id=f"{DISPATCH_WEBHOOKS}:{uuid.uuid4().hex}",
            _queue_name=QUEUE_NAME,
        )
    except (RedisError, OSError) as error:
        log.warning("could not wake the webhook dispatcher; the sweep will: %s", error)
        return False
    return True

"""Send new deliveries as soon as the transaction that wrote them commits.

`events.record_event` sends a PostgreSQL notification in the caller's transaction; PostgreSQL
delivers it only at commit (documentation of NOTIFY). Each worker listens on one
connection and runs the dispatcher when a notification arrives, so a webhook does not
wait behind other wake-ups in the arq queue. The arq wake-ups and the sweep stay as the
fallback: a missed notification only delays a delivery until one of them runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from postfuze_imports.webhooks.dispatcher import Dispatcher
from postfuze_imports.webhooks.events import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

CHANNEL = NOTIFY_CHANNEL


class DeliveryListener:
    """Runs `dispatcher` whenever a notification on `CHANNEL` arrives."""

    def __init__(self, dsn: str, dispatcher: Dispatcher, *, batch: int) -> None:
        self._dsn = dsn
        self._dispatcher = dispatcher
        self._batch = batch
        self._wanted = asyncio.Event()
        self._connection: asyncpg.Connection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.ensure_listening()
        self._task = asyncio.create_task(self._run(), name="webhook-delivery-listener")

    async def ensure_listening(self) -> None:
        """Open the listening connection unless it is open; the sweep calls this too."""
        if self._connection is not None and not self._connection.is_closed():
            return
        try:
            self._connection = await asyncpg.connect(self._dsn)
            await self._connection.add_listener(CHANNEL, self._on_notification)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("could not listen for new webhook deliveries: %s", error)
            self._connection = None
            return
        # Deliveries may have been written while no connection was listening.
        self._wanted.set()

    def _on_notification(self, *_: object) -> None:
        self._wanted.set()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                while await self._dispatcher.dispatch_due(self._batch) >= self._batch:
                    pass
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("webhook dispatch after a notification failed: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()

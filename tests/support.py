"""Helpers shared by the tests: waiting on conditions, worker processes, API calls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from postfuze_imports.settings import Settings

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll `check` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        await asyncio.sleep(interval)


def settings_env(settings: Settings) -> dict[str, str]:
    """Return the environment a worker or web process needs for `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POSTFUZE_") and key not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "POSTFUZE_SECRET_KEY": settings.secret_key,
            "POSTFUZE_ALLOW_PRIVATE_NETWORKS": "true"
            if settings.allow_private_networks
            else "false",
            "POSTFUZE_LEASE_SECONDS": str(settings.lease_seconds),
            "POSTFUZE_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
            "POSTFUZE_MAX_JOB_CRASHES": str(settings.max_job_crashes),
            "POSTFUZE_WORKER_CONCURRENCY": str(settings.worker_concurrency),
            "POSTFUZE_LOG_LEVEL": "INFO",
        }
    )
    return env


class WorkerProcess:
    """A `postfuze-imports worker` subprocess whose log goes to a file."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None):
        self.log_path = log_path
        env = settings_env(settings)
        env.update(extra_env or {})
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postfuze_imports", "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def kill(self) -> None:
        """Kill at once, as a crash would: no shutdown code runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


JsonBody = dict[str, Any]

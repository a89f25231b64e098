"""Run every benchmark and print the results as JSON.

Usage: python -m bench (DATABASE_URL, REDIS_URL and POSTFUZE_SECRET_KEY as for the
service; `make bench` provides them).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform

from bench import bluesky, imports, webhook_e2e, webhooks
from postfuze_imports.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    results = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "imports": asyncio.run(imports.run(settings)),
        "bluesky": asyncio.run(bluesky.run(settings)),
        "webhook_end_to_end": asyncio.run(webhook_e2e.run(settings)),
        "webhooks": asyncio.run(
            webhooks.run(settings.database_url, events=1000, latency_samples=1000)
        ),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

